"""compile_profile on generated input: valid profiles compile to what they say; anything else,
including a valid profile with one part replaced by arbitrary JSON, gives a profile that keeps
its promises or a one-line SeccompError, never another exception."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.linux.seccomp import SeccompError, SeccompProfile, compile_profile, features

KNOWN = features()
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
NAMES = ["read", "mkdir", "personality", "socketcall", "set_tls", "clone3", "getpriority"]
U64 = st.integers(0, 2**64 - 1)


def usable(arch: str) -> bool:
    """Whether the architecture can be in a filter on this machine (its byte order)."""
    try:
        compile_profile({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [arch]})
    except SeccompError:
        return False
    return True


ARCHS = [arch for arch in KNOWN["archs"] if usable(arch)]

CONDITION = st.fixed_dictionaries(
    {"index": st.integers(0, 5), "value": U64, "op": st.sampled_from(KNOWN["operators"])},
    optional={"valueTwo": U64},
)


def with_errno(action: str, key: str, limit: int) -> st.SearchStrategy[dict[str, Any]]:
    if action == "SCMP_ACT_ERRNO":
        return st.fixed_dictionaries({}, optional={key: st.integers(0, 4095)})
    if action == "SCMP_ACT_TRACE":
        return st.fixed_dictionaries({}, optional={key: st.integers(0, limit)})
    return st.just({})


ACTION = st.sampled_from(KNOWN["actions"])


def action_and_errno(key: str) -> st.SearchStrategy[dict[str, Any]]:
    """An action, and an errno (or trace message) when the action takes one."""

    def errno_for(action: str) -> st.SearchStrategy[dict[str, Any]]:
        limit = {"SCMP_ACT_ERRNO": 4095, "SCMP_ACT_TRACE": 0xFFFF}.get(action)
        if limit is None:
            return st.just({})
        return st.fixed_dictionaries({}, optional={key: st.integers(0, limit)})

    return ACTION.flatmap(lambda action: errno_for(action).map(lambda e: {"action": action, **e}))


RULE = st.builds(
    lambda base, action: {**base, **action},
    st.fixed_dictionaries(
        {"names": st.lists(st.sampled_from(NAMES), min_size=1, max_size=4)},
        optional={"args": st.lists(CONDITION, max_size=7)},
    ),
    action_and_errno("errnoRet"),
)
VALID = st.builds(
    lambda default, base: {
        "defaultAction": default["action"],
        **{key: value for key, value in default.items() if key != "action"},
        **base,
    },
    action_and_errno("defaultErrnoRet"),
    st.fixed_dictionaries(
        {},
        optional={
            "architectures": st.lists(st.sampled_from(ARCHS), max_size=3),
            "flags": st.lists(st.sampled_from(KNOWN["knownFlags"]), max_size=3),
            "listenerPath": st.sampled_from(["", "/run/agent.sock"]),
            "syscalls": st.lists(RULE, max_size=4),
        },
    ),
)


def check_promises(profile: SeccompProfile) -> None:
    assert profile.default_action in KNOWN["actions"]
    assert set(profile.architectures) <= set(KNOWN["archs"])
    assert set(profile.flags) <= set(KNOWN["knownFlags"])
    for rule in profile.rules:
        assert rule.names and all(isinstance(name, str) for name in rule.names)
        assert rule.action in KNOWN["actions"]
        assert rule.errno_ret is None or 0 <= rule.errno_ret <= 0xFFFF
        assert 0 <= rule.action_value < 2**32
        for condition in rule.args:
            assert 0 <= condition.index <= 5
            assert condition.op in KNOWN["operators"]
            assert 0 <= condition.value < 2**64 and 0 <= condition.value_two < 2**64
    assert 0 <= profile.default_action_value < 2**32


def compile_or_fail_cleanly(raw: Any) -> SeccompProfile | None:
    try:
        profile = compile_profile(raw)
    except SeccompError as error:
        message = str(error)
        assert message.startswith("config.json: linux.seccomp")
        assert "\n" not in message
        return None
    check_promises(profile)
    return profile


@FUZZ
@given(VALID)
def test_valid_profiles_compile_to_what_they_say(raw: dict[str, Any]) -> None:
    profile = compile_profile(raw)
    check_promises(profile)
    assert profile.default_action == raw["defaultAction"]
    assert profile.default_errno_ret == raw.get("defaultErrnoRet")
    assert profile.architectures == tuple(dict.fromkeys(raw.get("architectures", [])))
    rules = raw.get("syscalls", [])
    assert len(profile.rules) == len(rules)
    for rule, entry in zip(profile.rules, rules, strict=True):
        assert rule.names == tuple(dict.fromkeys(entry["names"]))
        assert rule.action == entry["action"]
        assert rule.errno_ret == entry.get("errnoRet")
        assert [(c.index, c.op, c.value, c.value_two) for c in rule.args] == [
            (a["index"], a["op"], a["value"], a.get("valueTwo", 0)) for a in entry.get("args", [])
        ]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    changed = copy.deepcopy(value)
    target = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return changed


JUNK = JSON | st.sampled_from(
    ["", "foo", "SCMP_ACT_NOTIFY", "SCMP_ACT_NOPE", "SCMP_CMP_LIKE", "SCMP_ARCH_VAX", -1, 6, 4096]
)


@FUZZ
@given(VALID, st.data())
def test_one_part_replaced_by_anything(raw: dict[str, Any], data: st.DataObject) -> None:
    # Not the whole profile (test_arbitrary_json does that): one part of it.
    path = data.draw(st.sampled_from(list(paths(raw))[1:]), label="path")
    compile_or_fail_cleanly(replaced(raw, path, data.draw(JUNK, label="junk")))


@FUZZ
@given(JSON | st.dictionaries(st.sampled_from(["defaultAction", "syscalls", "flags"]), JSON))
def test_arbitrary_json(raw: Any) -> None:
    compile_or_fail_cleanly(raw)
