"""Device rules: the allowlist they come to, and the eBPF program compiled from it, run here
by a small interpreter of the instructions the compiler emits."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from inclavare.cgroups.devices import DEFAULT_ALLOWED, Allowlist, container_rules
from inclavare.cgroups.ebpf import compile_allowlist
from inclavare.cgroups.resources import DeviceRule

ACCESS = {"m": 1, "r": 2, "w": 4}
TYPES = {"b": 1, "c": 2}


def run_program(program: bytes, kind: str, major: int, minor: int, access: str) -> int:
    """Execute a device program on one access (the subset of eBPF the compiler uses)."""
    assert len(program) % 8 == 0
    mask = sum(ACCESS[letter] for letter in access)
    context = struct.pack("<III", (mask << 16) | TYPES[kind], major, minor)
    registers = [0] * 11
    pc = 0
    steps = 0
    while True:
        steps += 1
        assert steps < 10000, "the program loops"
        code, regs, off, imm = struct.unpack_from("<BBhi", program, pc * 8)
        dst, src = regs & 0xF, regs >> 4
        pc += 1
        if code == 0x61:  # ldx w
            assert src == 1 and off in (0, 4, 8)
            registers[dst] = struct.unpack_from("<I", context, off)[0]
        elif code == 0xBF:
            registers[dst] = registers[src]
        elif code == 0xB7:
            registers[dst] = imm & 0xFFFFFFFFFFFFFFFF
        elif code == 0x57:
            registers[dst] &= imm & 0xFFFFFFFFFFFFFFFF
        elif code == 0x77:
            registers[dst] >>= imm
        elif code == 0x55:
            if registers[dst] != imm:
                pc += off
        elif code == 0x15:
            if registers[dst] == imm:
                pc += off
        elif code == 0x95:
            return registers[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        assert 0 <= pc < len(program) // 8, "jump out of the program"


def test_a_rule_for_all_devices_resets_the_exceptions() -> None:
    allowlist = Allowlist.of(
        [DeviceRule(False, "a"), DeviceRule(True, "c", 1, 3, "rw"), DeviceRule(True, "a")]
    )
    assert allowlist.default_allow and not allowlist.exceptions
    assert allowlist.lines() == ["a *:* rwm"]


def test_allow_then_deny_part_of_the_access() -> None:
    allowlist = Allowlist.of(
        [
            DeviceRule(False, "a"),
            DeviceRule(True, "c", 1, 3, "rwm"),
            DeviceRule(False, "c", 1, 3, "w"),
        ]
    )
    assert allowlist.lines() == ["c 1:3 rm"]
    assert allowlist.permits("c", 1, 3, "r")
    assert not allowlist.permits("c", 1, 3, "w")
    assert not allowlist.permits("c", 1, 3, "rw")
    assert not allowlist.permits("b", 1, 3, "r")


def test_wildcards_in_a_deny_by_default_list() -> None:
    allowlist = Allowlist.of([DeviceRule(False, "a"), DeviceRule(True, "c", 136, -1, "rwm")])
    assert allowlist.permits("c", 136, 7, "rw")
    assert not allowlist.permits("c", 137, 7, "r")


def test_denials_in_an_allow_by_default_list() -> None:
    allowlist = Allowlist.of([DeviceRule(True, "a"), DeviceRule(False, "b", 8, -1, "w")])
    assert allowlist.permits("b", 8, 1, "r")
    assert not allowlist.permits("b", 8, 1, "rw")
    assert allowlist.permits("c", 8, 1, "w")


def test_container_rules_start_denied_and_end_with_defaults_and_created_devices() -> None:
    rules = container_rules([DeviceRule(True, "c", 10, 229, "rw")], [("c", 4, 1), ("p", 0, 0)])
    assert rules[0] == DeviceRule(False, "a")
    assert rules[1] == DeviceRule(True, "c", 10, 229, "rw")
    assert tuple(rules[2 : 2 + len(DEFAULT_ALLOWED)]) == DEFAULT_ALLOWED
    assert rules[-1] == DeviceRule(True, "c", 4, 1, "rwm")  # fifos ("p") need no rule
    allowlist = Allowlist.of(rules)
    assert allowlist.permits("c", 1, 3, "rw")  # /dev/null
    assert allowlist.permits("b", 8, 0, "m")  # mknod of anything
    assert not allowlist.permits("b", 8, 0, "r")
    assert not allowlist.permits("c", 1, 1, "r")  # /dev/mem
    assert allowlist.permits("c", 10, 229, "rw")
    assert not allowlist.permits("c", 10, 229, "rwm")


def test_without_a_spec_list_only_the_defaults_are_allowed() -> None:
    lines = Allowlist.of(container_rules(None)).lines()
    assert lines[:3] == ["c *:* m", "b *:* m", "c 1:3 rwm"]
    assert "c 136:* rwm" in lines


def test_the_program_of_the_default_rules() -> None:
    program = compile_allowlist(Allowlist.of(container_rules(None)))
    assert run_program(program, "c", 1, 3, "rw") == 1
    assert run_program(program, "c", 136, 4, "rw") == 1
    assert run_program(program, "c", 1, 1, "r") == 0
    assert run_program(program, "b", 254, 0, "m") == 1
    assert run_program(program, "b", 254, 0, "r") == 0


def test_programs_of_allow_all_and_deny_all() -> None:
    allow_all = compile_allowlist(Allowlist.of([DeviceRule(True, "a")]))
    deny_all = compile_allowlist(Allowlist.of([DeviceRule(False, "a")]))
    assert run_program(allow_all, "c", 1, 1, "rwm") == 1
    assert run_program(deny_all, "c", 1, 3, "r") == 0


NUMBERS = st.sampled_from([-1, 0, 1, 3, 8])
RULES = st.builds(
    DeviceRule,
    st.booleans(),
    st.sampled_from(["a", "b", "c", "c", "c"]),
    NUMBERS,
    NUMBERS,
    st.sampled_from(["r", "w", "m", "rw", "rm", "wm", "rwm"]),
).map(lambda rule: DeviceRule(rule.allow, "a") if rule.type == "a" else rule)
ACCESSES = st.tuples(
    st.sampled_from(["b", "c"]),
    st.sampled_from([0, 1, 3, 8]),
    st.sampled_from([0, 1, 3, 8]),
    st.sampled_from(["r", "w", "m", "rw", "rwm"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(RULES, max_size=8), st.lists(ACCESSES, min_size=1, max_size=10))
def test_the_program_decides_as_the_allowlist(
    rules: list[DeviceRule], accesses: list[tuple[str, int, int, str]]
) -> None:
    allowlist = Allowlist.of([DeviceRule(False, "a"), *rules])
    program = compile_allowlist(allowlist)
    for kind, major, minor, access in accesses:
        expected = allowlist.permits(kind, major, minor, access)
        assert run_program(program, kind, major, minor, access) == int(expected)
