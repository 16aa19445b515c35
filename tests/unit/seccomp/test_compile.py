"""compile_profile: what is accepted, what it becomes, and the message for what is not."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from inclavare.errors import InclavareError
from inclavare.linux.seccomp import (
    Condition,
    Rule,
    SeccompError,
    SeccompProfile,
    compile_profile,
)
from tests.unit.seccomp.profiles import DOCKER_ALLOWED, docker_like_profile

ALLOW = "SCMP_ACT_ALLOW"
ERRNO = "SCMP_ACT_ERRNO"


def allow_by_default(**extra: Any) -> dict[str, Any]:
    return {"defaultAction": ALLOW, **extra}


def one_rule(**rule: Any) -> dict[str, Any]:
    return allow_by_default(syscalls=[{"names": ["mkdir"], "action": ERRNO, **rule}])


def one_arg(**arg: Any) -> dict[str, Any]:
    return one_rule(args=[{"index": 0, "value": 1, "op": "SCMP_CMP_EQ", **arg}])


VALID: list[tuple[str, dict[str, Any], SeccompProfile]] = [
    ("minimal", allow_by_default(), SeccompProfile(ALLOW)),
    (
        "default errno",
        {"defaultAction": ERRNO, "defaultErrnoRet": 38},
        SeccompProfile(ERRNO, default_errno_ret=38),
    ),
    (
        "default trace with a message",
        {"defaultAction": "SCMP_ACT_TRACE", "defaultErrnoRet": 65535},
        SeccompProfile("SCMP_ACT_TRACE", default_errno_ret=65535),
    ),
    (
        "errno 0 (the call seems to succeed)",
        one_rule(errnoRet=0),
        SeccompProfile(ALLOW, rules=(Rule(("mkdir",), ERRNO, errno_ret=0),)),
    ),
    (
        "every action",
        allow_by_default(
            syscalls=[
                {"names": ["read"], "action": "SCMP_ACT_KILL"},
                {"names": ["write"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["open"], "action": "SCMP_ACT_KILL_THREAD"},
                {"names": ["close"], "action": "SCMP_ACT_TRAP"},
                {"names": ["stat"], "action": ERRNO, "errnoRet": 4095},
                {"names": ["fstat"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
                {"names": ["lstat"], "action": ALLOW},
                {"names": ["poll"], "action": "SCMP_ACT_LOG"},
            ]
        ),
        SeccompProfile(
            ALLOW,
            rules=(
                Rule(("read",), "SCMP_ACT_KILL", position=0),
                Rule(("write",), "SCMP_ACT_KILL_PROCESS", position=1),
                Rule(("open",), "SCMP_ACT_KILL_THREAD", position=2),
                Rule(("close",), "SCMP_ACT_TRAP", position=3),
                Rule(("stat",), ERRNO, errno_ret=4095, position=4),
                Rule(("fstat",), "SCMP_ACT_TRACE", errno_ret=7, position=5),
                Rule(("lstat",), ALLOW, position=6),
                Rule(("poll",), "SCMP_ACT_LOG", position=7),
            ),
        ),
    ),
    (
        "every operator, 64-bit values, valueTwo",
        one_rule(
            args=[
                {"index": 0, "value": 0, "op": "SCMP_CMP_NE"},
                {"index": 1, "value": 2**64 - 1, "op": "SCMP_CMP_LT"},
                {"index": 2, "value": 3, "op": "SCMP_CMP_LE"},
                {"index": 3, "value": 4, "op": "SCMP_CMP_EQ", "valueTwo": None},
                {"index": 4, "value": 5, "op": "SCMP_CMP_GE"},
                {"index": 5, "value": 6, "op": "SCMP_CMP_GT"},
                {"index": 0, "value": 0xFF00, "valueTwo": 2**64 - 1, "op": "SCMP_CMP_MASKED_EQ"},
            ]
        ),
        SeccompProfile(
            ALLOW,
            rules=(
                Rule(
                    ("mkdir",),
                    ERRNO,
                    args=(
                        Condition(0, "SCMP_CMP_NE", 0),
                        Condition(1, "SCMP_CMP_LT", 2**64 - 1),
                        Condition(2, "SCMP_CMP_LE", 3),
                        Condition(3, "SCMP_CMP_EQ", 4),
                        Condition(4, "SCMP_CMP_GE", 5),
                        Condition(5, "SCMP_CMP_GT", 6),
                        Condition(0, "SCMP_CMP_MASKED_EQ", 0xFF00, 2**64 - 1),
                    ),
                ),
            ),
        ),
    ),
    (
        "architectures and flags, repeats dropped",
        allow_by_default(
            architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"],
            flags=[
                "SECCOMP_FILTER_FLAG_TSYNC",
                "SECCOMP_FILTER_FLAG_LOG",
                "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                "SECCOMP_FILTER_FLAG_LOG",
            ],
        ),
        SeccompProfile(
            ALLOW,
            architectures=("SCMP_ARCH_X86_64", "SCMP_ARCH_X86"),
            flags=(
                "SECCOMP_FILTER_FLAG_TSYNC",
                "SECCOMP_FILTER_FLAG_LOG",
                "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            ),
        ),
    ),
    (
        "names repeated, and names other architectures have",
        allow_by_default(
            architectures=["SCMP_ARCH_AARCH64"],
            syscalls=[{"names": ["socketcall", "arm_fadvise64_64", "socketcall"], "action": ERRNO}],
        ),
        SeccompProfile(
            ALLOW,
            architectures=("SCMP_ARCH_AARCH64",),
            rules=(Rule(("socketcall", "arm_fadvise64_64"), ERRNO),),
        ),
    ),
    (
        "null is absent; unknown properties are ignored",
        {
            "defaultAction": ALLOW,
            "defaultErrnoRet": None,
            "architectures": None,
            "flags": None,
            "listenerPath": None,
            "comment": "not in the spec",
            "syscalls": [
                {
                    "names": ["mkdir"],
                    "action": ERRNO,
                    "errnoRet": None,
                    "args": None,
                    "includes": {"caps": ["CAP_SYS_ADMIN"]},
                }
            ],
        },
        SeccompProfile(ALLOW, rules=(Rule(("mkdir",), ERRNO),)),
    ),
    (
        "a listener without SCMP_ACT_NOTIFY is ignored",
        allow_by_default(listenerPath="/run/agent.sock", listenerMetadata="opaque"),
        SeccompProfile(ALLOW),
    ),
    (
        "empty lists",
        allow_by_default(syscalls=[], architectures=[], flags=[]),
        SeccompProfile(ALLOW),
    ),
]


@pytest.mark.parametrize(("raw", "expected"), [v[1:] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_profiles(raw: dict[str, Any], expected: SeccompProfile) -> None:
    before = copy.deepcopy(raw)
    assert compile_profile(raw) == expected
    assert raw == before


def test_docker_like_profile() -> None:
    profile = compile_profile(docker_like_profile())
    assert profile.default_action == ERRNO
    assert profile.default_errno_ret == 1
    assert profile.architectures == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    assert profile.rules[0].names == tuple(DOCKER_ALLOWED)
    personality = [rule for rule in profile.rules if rule.names == ("personality",)]
    assert [rule.args for rule in personality] == [
        (Condition(0, "SCMP_CMP_EQ", value),) for value in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF)
    ]
    (clone,) = [rule for rule in profile.rules if rule.names == ("clone",)]
    assert clone.args == (Condition(0, "SCMP_CMP_MASKED_EQ", 0x7E020000, 0),)
    assert profile.rules[-1] == Rule(("clone3",), ERRNO, errno_ret=38, position=8)


def test_action_values() -> None:
    """The numbers handed to libseccomp: the kernel's SECCOMP_RET_* values."""
    profile = compile_profile(
        allow_by_default(
            syscalls=[
                {"names": ["read"], "action": ERRNO},
                {"names": ["read"], "action": ERRNO, "errnoRet": 38},
                {"names": ["read"], "action": "SCMP_ACT_TRACE"},
                {"names": ["read"], "action": "SCMP_ACT_KILL"},
                {"names": ["read"], "action": "SCMP_ACT_KILL_THREAD"},
                {"names": ["read"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["read"], "action": "SCMP_ACT_TRAP"},
                {"names": ["read"], "action": "SCMP_ACT_LOG"},
                {"names": ["read"], "action": ALLOW},
            ]
        )
    )
    assert [rule.action_value for rule in profile.rules] == [
        0x00050001,
        0x00050026,
        0x7FF00001,
        0,
        0,
        0x80000000,
        0x00030000,
        0x7FFC0000,
        0x7FFF0000,
    ]
    assert profile.default_action_value == 0x7FFF0000
    assert SeccompProfile(ERRNO, default_errno_ret=13).default_action_value == 0x0005000D


SECCOMP = "config.json: linux.seccomp"

INVALID: list[tuple[str, object, str]] = [
    ("not an object", ["SCMP_ACT_ALLOW"], ": must be an object, got a list"),
    ("no default action", {}, ".defaultAction: required"),
    ("default action null", {"defaultAction": None}, ".defaultAction: required"),
    (
        "default action not a string",
        {"defaultAction": 1},
        ".defaultAction: must be a string, got an integer",
    ),
    (
        "unknown default action",
        {"defaultAction": "SCMP_ACT_NOPE"},
        ".defaultAction: unknown action 'SCMP_ACT_NOPE'",
    ),
    (
        "notify by default",
        {"defaultAction": "SCMP_ACT_NOTIFY"},
        ".defaultAction: SCMP_ACT_NOTIFY is not supported (no seccomp notification)",
    ),
    (
        "default errno for an action without one",
        {"defaultAction": ALLOW, "defaultErrnoRet": 1},
        ".defaultErrnoRet: SCMP_ACT_ALLOW takes no errno (only SCMP_ACT_ERRNO and SCMP_ACT_TRACE)",
    ),
    (
        "default errno negative",
        {"defaultAction": ERRNO, "defaultErrnoRet": -1},
        ".defaultErrnoRet: -1 out of range (0 to 4095)",
    ),
    (
        "default errno too large",
        {"defaultAction": ERRNO, "defaultErrnoRet": 4096},
        ".defaultErrnoRet: 4096 out of range (0 to 4095)",
    ),
    (
        "default errno a string",
        {"defaultAction": ERRNO, "defaultErrnoRet": "1"},
        ".defaultErrnoRet: must be an unsigned integer, got a string",
    ),
    (
        "default errno a float",
        {"defaultAction": ERRNO, "defaultErrnoRet": 1.0},
        ".defaultErrnoRet: must be an unsigned integer, got a number with a fraction",
    ),
    (
        "default errno a boolean",
        {"defaultAction": ERRNO, "defaultErrnoRet": True},
        ".defaultErrnoRet: must be an unsigned integer, got a boolean",
    ),
    (
        "trace message too large",
        {"defaultAction": "SCMP_ACT_TRACE", "defaultErrnoRet": 65536},
        ".defaultErrnoRet: 65536 out of range (0 to 65535)",
    ),
    (
        "architectures not a list",
        allow_by_default(architectures="SCMP_ARCH_X86_64"),
        ".architectures: must be a list, got a string",
    ),
    (
        "architecture not a string",
        allow_by_default(architectures=["SCMP_ARCH_X86_64", 3]),
        ".architectures[1]: must be a string, got an integer",
    ),
    (
        "unknown architecture",
        allow_by_default(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"]),
        ".architectures[1]: unknown architecture 'SCMP_ARCH_VAX'",
    ),
    (
        "architecture of the other byte order",
        allow_by_default(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_S390X"]),
        ".architectures[1]: SCMP_ARCH_S390X does not have this machine's byte order "
        "(little-endian)",
    ),
    (
        "flags not a list",
        allow_by_default(flags={}),
        ".flags: must be a list, got an object",
    ),
    (
        "unknown flag",
        allow_by_default(flags=["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_FAST"]),
        ".flags[1]: unknown flag 'SECCOMP_FILTER_FLAG_FAST'",
    ),
    (
        "notification flag",
        allow_by_default(flags=["SECCOMP_FILTER_FLAG_NEW_LISTENER"]),
        ".flags[0]: SECCOMP_FILTER_FLAG_NEW_LISTENER is not supported: "
        "seccomp notification is not supported",
    ),
    (
        "killable-receive flag",
        allow_by_default(flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]),
        ".flags[0]: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is not supported: "
        "seccomp notification is not supported",
    ),
    (
        "listener path not a string",
        allow_by_default(listenerPath=1),
        ".listenerPath: must be a string, got an integer",
    ),
    (
        "listener metadata without a path",
        allow_by_default(listenerMetadata="opaque"),
        ".listenerMetadata: set without listenerPath",
    ),
    (
        "syscalls not a list",
        allow_by_default(syscalls={"names": ["read"]}),
        ".syscalls: must be a list, got an object",
    ),
    (
        "entry not an object",
        allow_by_default(syscalls=["read"]),
        ".syscalls[0]: must be an object, got a string",
    ),
    (
        "entry without names",
        allow_by_default(syscalls=[{"action": ERRNO}]),
        ".syscalls[0].names: required",
    ),
    (
        "empty names",
        one_rule(names=[]),
        ".syscalls[0].names: must name at least one system call",
    ),
    ("names a string", one_rule(names="mkdir"), ".syscalls[0].names: must be a list, got a string"),
    (
        "name not a string",
        one_rule(names=["mkdir", None]),
        ".syscalls[0].names[1]: must be a string, got null",
    ),
    (
        "unknown syscall, fourth entry",
        allow_by_default(
            syscalls=[
                {"names": ["read"], "action": ALLOW},
                {"names": ["write"], "action": ALLOW},
                {"names": ["open"], "action": ALLOW},
                {"names": ["close", "foo"], "action": ALLOW},
            ]
        ),
        ".syscalls[3].names: unknown syscall 'foo'",
    ),
    ("empty syscall name", one_rule(names=[""]), ".syscalls[0].names: unknown syscall ''"),
    (
        "syscall name with a NUL",
        one_rule(names=["mkdir\0"]),
        ".syscalls[0].names: unknown syscall 'mkdir\\x00'",
    ),
    (
        "syscall name not ASCII",
        one_rule(names=["mkdír"]),
        ".syscalls[0].names: unknown syscall 'mkdír'",
    ),
    (
        "syscall names are case-sensitive",
        one_rule(names=["MKDIR"]),
        ".syscalls[0].names: unknown syscall 'MKDIR'",
    ),
    (
        "entry without action",
        allow_by_default(syscalls=[{"names": ["read"]}]),
        ".syscalls[0].action: required",
    ),
    (
        "unknown action",
        one_rule(action="SCMP_ACT_NOPE"),
        ".syscalls[0].action: unknown action 'SCMP_ACT_NOPE'",
    ),
    (
        "notify action",
        one_rule(action="SCMP_ACT_NOTIFY"),
        ".syscalls[0].action: SCMP_ACT_NOTIFY is not supported (no seccomp notification)",
    ),
    (
        "errno for kill",
        one_rule(action="SCMP_ACT_KILL", errnoRet=1),
        ".syscalls[0].errnoRet: SCMP_ACT_KILL takes no errno "
        "(only SCMP_ACT_ERRNO and SCMP_ACT_TRACE)",
    ),
    (
        "errno too large",
        one_rule(errnoRet=70000),
        ".syscalls[0].errnoRet: 70000 out of range (0 to 4095)",
    ),
    ("args not a list", one_rule(args={}), ".syscalls[0].args: must be a list, got an object"),
    (
        "arg not an object",
        one_rule(args=[0]),
        ".syscalls[0].args[0]: must be an object, got an integer",
    ),
    ("arg without index", one_arg(index=None), ".syscalls[0].args[0].index: required"),
    ("arg without value", one_arg(value=None), ".syscalls[0].args[0].value: required"),
    ("arg without op", one_arg(op=None), ".syscalls[0].args[0].op: required"),
    (
        "index 6",
        one_arg(index=6),
        ".syscalls[0].args[0].index: index 6 out of range (arguments are 0 to 5)",
    ),
    (
        "index negative",
        one_arg(index=-1),
        ".syscalls[0].args[0].index: index -1 out of range (arguments are 0 to 5)",
    ),
    (
        "index a string",
        one_arg(index="0"),
        ".syscalls[0].args[0].index: must be an unsigned integer, got a string",
    ),
    (
        "value over 64 bits",
        one_arg(value=2**64),
        ".syscalls[0].args[0].value: 18446744073709551616 out of range (0 to 18446744073709551615)",
    ),
    (
        "value negative",
        one_arg(value=-1),
        ".syscalls[0].args[0].value: -1 out of range (0 to 18446744073709551615)",
    ),
    (
        "valueTwo a float",
        one_arg(valueTwo=0.5),
        ".syscalls[0].args[0].valueTwo: must be an unsigned integer, got a number with a fraction",
    ),
    (
        "unknown operator",
        one_arg(op="SCMP_CMP_LIKE"),
        ".syscalls[0].args[0].op: unknown operator 'SCMP_CMP_LIKE'",
    ),
    (
        "operator not a string",
        one_arg(op=4),
        ".syscalls[0].args[0].op: must be a string, got an integer",
    ),
    (
        "bad condition in a later entry",
        allow_by_default(
            syscalls=[
                {"names": ["read"], "action": ALLOW},
                {
                    "names": ["personality"],
                    "action": ALLOW,
                    "args": [
                        {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                        {"index": 0, "value": 8, "op": "SCMP_CMP_ALMOST"},
                    ],
                },
            ]
        ),
        ".syscalls[1].args[1].op: unknown operator 'SCMP_CMP_ALMOST'",
    ),
]


@pytest.mark.parametrize(("raw", "message"), [v[1:] for v in INVALID], ids=[v[0] for v in INVALID])
def test_invalid_profiles(raw: object, message: str) -> None:
    with pytest.raises(SeccompError) as caught:
        compile_profile(raw)
    assert str(caught.value) == SECCOMP + message
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, InclavareError)


def test_the_path_in_messages_can_be_chosen() -> None:
    with pytest.raises(SeccompError, match=r"^config\.json: seccomp\.defaultAction: required$"):
        compile_profile({}, path="seccomp")
