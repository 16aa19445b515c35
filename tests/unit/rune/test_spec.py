"""config.json: what is accepted, and the message for what is not."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from inclavare.oci.default_spec import default_spec, make_rootless
from inclavare.oci.spec import SpecError, parse_spec


def spec_with(**changes: Any) -> dict[str, Any]:
    """The default spec with dotted paths set (value None deletes the key)."""
    spec = default_spec()
    for dotted, value in changes.items():
        keys = dotted.split("__")
        target: Any = spec
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last: Any = int(keys[-1]) if isinstance(target, list) else keys[-1]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return spec


def test_the_default_spec_parses() -> None:
    spec = parse_spec(json.dumps(default_spec()))
    assert spec.process is not None
    assert spec.process.args == ["sh"]
    assert spec.root.readonly
    assert [ns.type for ns in spec.linux.namespaces] == ["pid", "network", "ipc", "uts", "mount"]
    assert spec.mounts[1].destination == "/dev" and spec.mounts[1].type == "tmpfs"
    assert spec.process.capabilities is not None
    assert spec.process.capabilities.bounding == [
        "CAP_AUDIT_WRITE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
    ]


def test_the_rootless_default_parses() -> None:
    spec = parse_spec(json.dumps(make_rootless(default_spec(), 1000, 1000)))
    assert spec.linux.namespace("user") is not None
    assert spec.linux.namespace("network") is None
    assert spec.linux.uid_mappings[0].host_id == 1000


def test_unknown_properties_are_ignored() -> None:
    raw = default_spec()
    raw["somethingNew"] = {"x": 1}
    raw["process"]["futureField"] = [1, 2]
    assert parse_spec(json.dumps(raw)).process is not None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ociVersion": None}, "config.json: ociVersion: required"),
        ({"ociVersion": 1}, "config.json: ociVersion: must be a string, got an integer"),
        ({"root": None}, "config.json: root: required"),
        ({"root__path": None}, "config.json: root.path: required"),
        ({"process__args": []}, "config.json: process.args: must not be empty"),
        ({"process__args": "sh"}, "config.json: process.args: must be a list, got a string"),
        ({"process__args": ["sh", 3]}, r"config.json: process.args\[1\]: must be a string"),
        ({"process__cwd": "tmp"}, "config.json: process.cwd: must be an absolute path"),
        ({"process__user": None}, "config.json: process.user: required"),
        ({"process__user__uid": -1}, "config.json: process.user.uid: must be at least 0"),
        ({"process__user__uid": True}, "process.user.uid: must be an integer, got a boolean"),
        ({"process__env": ["PATH"]}, r"process.env\[0\]: 'PATH' is not NAME=VALUE"),
        (
            {"process__capabilities__bounding": ["CAP_NOPE"]},
            "process.capabilities.bounding: unknown capability 'CAP_NOPE'",
        ),
        (
            {"process__rlimits": [{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}]},
            "unknown rlimit 'RLIMIT_NOPE'",
        ),
        (
            {"process__rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 1}]},
            "soft limit 10 exceeds hard limit 1",
        ),
        ({"process__oomScoreAdj": 5000}, "oomScoreAdj: must be between -1000 and 1000"),
        ({"mounts__0__destination": "proc"}, r"mounts\[0\].destination: must be an absolute"),
        ({"mounts__0__options": "ro"}, r"mounts\[0\].options: must be a list"),
        ({"linux__namespaces": [{"type": "pid"}]}, "a mount namespace is required"),
        (
            {"linux__namespaces": [{"type": "mount"}, {"type": "mount"}]},
            "duplicate mount namespace",
        ),
        (
            {"linux__namespaces": [{"type": "mount"}, {"type": "bogus"}]},
            "unknown namespace type 'bogus'",
        ),
        (
            {"linux__namespaces": [{"type": "mount"}, {"type": "user"}]},
            "uidMappings and gidMappings are required",
        ),
        ({"linux__namespaces": [{"type": "mount"}]}, "hostname and domainname need a new uts"),
        ({"linux__rootfsPropagation": "sideways"}, "unknown propagation 'sideways'"),
        ({"linux__sysctl": {"net.ipv4.ip_forward": 1}}, r"sysctl.net.ipv4.ip_forward: must be"),
        ({"linux__sysctl": {"../etc": "1"}}, "linux.sysctl: invalid name"),
        (
            {"linux__sysctl": {"kernel.panic": "1"}},
            "kernel.panic is not namespaced: it would change the host",
        ),
        (
            {"linux__sysctl": {"vm.overcommit_memory": "1"}},
            "vm.overcommit_memory is not namespaced",
        ),
        (
            {
                "linux__sysctl": {"net.ipv4.ip_forward": "1"},
                "linux__namespaces": [{"type": "mount"}],
                "hostname": None,
            },
            "net.ipv4.ip_forward needs a new network namespace",
        ),
        ({"linux__devices": [{"path": "/dev/x", "type": "z"}]}, "unknown device type 'z'"),
        ({"linux__devices": [{"path": "/dev/x", "type": "c"}]}, r"devices\[0\].major: required"),
        (
            {"hooks": {"prestart": [{"path": "relative"}]}},
            r"hooks.prestart\[0\].path: must be an absolute path",
        ),
        (
            {"hooks": {"poststart": [{"path": "/bin/true", "timeout": 0}]}},
            "timeout: must be greater than zero",
        ),
        ({"linux__timeOffsets": {"monotonic": {"secs": 1}}}, "a new time namespace is required"),
    ],
)
def test_invalid_configurations_name_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(json.dumps(spec_with(**changes)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "config.json: invalid JSON: empty document"),
        ("{", "config.json: invalid JSON"),
        ("[]", "config.json: must be an object, got a list"),
        ('{"ociVersion": "1.0"} trailing', "invalid JSON: extra data"),
        (b"\xff\xfe", "config.json: invalid JSON"),
    ],
)
def test_documents_that_are_not_a_config(text: str | bytes, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(text)


def test_the_user_namespace_with_mappings() -> None:
    raw = spec_with()
    raw["linux"]["namespaces"].append({"type": "user"})
    raw["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    raw["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    spec = parse_spec(json.dumps(raw))
    assert spec.linux.uid_mappings[0].size == 65536


def test_the_default_spec_is_runcs(tmp_path: Path) -> None:
    """`rune spec` and `runc spec` write the same configuration (but for the names)."""
    runc = shutil.which("runc")
    if runc is None:
        pytest.skip("runc is not installed (make install installs it)")
    subprocess.run([runc, "spec", "--bundle", str(tmp_path)], check=True)
    theirs = json.loads((tmp_path / "config.json").read_text())
    ours = copy.deepcopy(default_spec())
    for document in (theirs, ours):
        document.pop("ociVersion")
        document.pop("hostname")
    assert ours == theirs


def test_the_rootless_spec_is_runcs(tmp_path: Path) -> None:
    runc = shutil.which("runc")
    if runc is None:
        pytest.skip("runc is not installed (make install installs it)")
    subprocess.run([runc, "spec", "--rootless", "--bundle", str(tmp_path)], check=True)
    theirs = json.loads((tmp_path / "config.json").read_text())
    ours = make_rootless(default_spec(), 0, 0)
    uid_map = theirs["linux"]["uidMappings"][0]
    ours["linux"]["uidMappings"][0]["hostID"] = uid_map["hostID"]
    ours["linux"]["gidMappings"][0]["hostID"] = theirs["linux"]["gidMappings"][0]["hostID"]
    for document in (theirs, ours):
        document.pop("ociVersion")
        document.pop("hostname")
    assert ours == theirs
