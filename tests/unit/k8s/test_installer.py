"""containerd's config.toml edited by the node installer: the rune runtime is added as one
marked block, in the format of the file's version, without changing anything else."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inclavare.k8s.installer import (
    BEGIN_MARK,
    InstallerError,
    add_runtime,
    containerd_major,
    remove_runtime,
    runtime_settings,
)

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"

OPERATOR_V2 = """\
# the operator's comments stay
version = 2
root = "/data/containerd"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.example/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = true
"""

OPERATOR_V3 = """\
version = 3
[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
"""

OPERATOR_V1 = """\
[plugins.cri.containerd]
  snapshotter = "overlayfs"
"""

TABLES = {
    OPERATOR_V2: ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"),
    OPERATOR_V3: ("plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"),
    OPERATOR_V1: ("plugins", "cri", "containerd", "runtimes"),
}


def lookup(document: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


@pytest.mark.parametrize("original", list(TABLES), ids=["v2", "v3", "v1"])
def test_add_is_idempotent_keeps_the_rest_and_remove_restores(original: str) -> None:
    added = add_runtime(original, "config.toml")
    assert added.startswith(original)  # the operator's text, unchanged, then the block
    assert add_runtime(added, "config.toml") == added
    parsed = tomllib.loads(added)
    assert lookup(parsed, TABLES[original])["rune"] == runtime_settings()
    assert parsed.get("version") == tomllib.loads(original).get("version")
    assert remove_runtime(added, "config.toml") == original
    assert remove_runtime(original, "config.toml") == original


def test_a_changed_block_is_replaced_and_text_after_it_is_kept() -> None:
    added = add_runtime(OPERATOR_V2, "c")
    edited = added.replace('"enclave.*"]\n# END', '"enclave.*", "other"]\n# END') + (
        '\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/certs.d"\n'
    )
    again = add_runtime(edited, "c")
    assert again.count(BEGIN_MARK) == 1
    assert '"other"' not in again
    assert 'config_path = "/etc/certs.d"' in again
    removed = remove_runtime(again, "c")
    assert BEGIN_MARK not in removed and 'config_path = "/etc/certs.d"' in removed


def test_empty_config_gets_the_format_of_the_containerd_version() -> None:
    assert add_runtime("", "c", 3).startswith("version = 3\n\n")
    assert add_runtime("\n  \n", "c", 2).startswith("version = 2\n\n")
    with pytest.raises(InstallerError, match="empty and the containerd version is unknown"):
        add_runtime("", "c")
    assert remove_runtime(add_runtime("", "c", 2), "c") == "version = 2\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rune]\n'
            'runtime_type = "mine"\n',
            "c already defines a runtime named rune that inclavare-node-installer did not write",
        ),
        (
            'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
            'runtimes = { runc = { runtime_type = "io.containerd.runc.v2" } }\n',
            "c: the rune runtime cannot be added as a table at the end of this file",
        ),
        ("version = 9\n", "c: unknown containerd config version 9 (known: 1, 2, 3)"),
        ('version = "2"\n', "c: unknown containerd config version '2'"),
        ("[plugins\n", "c is not valid TOML: "),
    ],
)
def test_refusals(text: str, message: str) -> None:
    with pytest.raises(InstallerError) as caught:
        add_runtime(text, "c")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


_keys = st.text(alphabet="abcdefghij_", min_size=1, max_size=6)
_values = st.one_of(
    st.integers(-5, 5), st.booleans(), st.text(alphabet="abc xyz/.*-_:", max_size=8)
)


@given(st.dictionaries(_keys, _values, max_size=5), st.dictionaries(_keys, _values, max_size=5))
def test_other_settings_survive(top: dict[str, object], cri: dict[str, object]) -> None:
    def toml(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return f'"{value}"'
        return str(value)

    lines = ["version = 2"] + [f"{key} = {toml(value)}" for key, value in top.items()]
    lines.append('[plugins."io.containerd.grpc.v1.cri"]')
    lines += [f"  {key} = {toml(value)}" for key, value in cri.items()]
    text = "\n".join(lines) + "\n"
    added = tomllib.loads(add_runtime(text, "c"))
    for key, value in top.items():
        assert added[key] == value
    for key, value in cri.items():
        assert added["plugins"]["io.containerd.grpc.v1.cri"][key] == value


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3", 1),
        ("containerd containerd.io v2.0.4 1a43cb6a1035441f9aca8f5666a9b3ef9e70ab20", 2),
    ],
)
def test_containerd_major(output: str, major: int) -> None:
    assert containerd_major(output) == major


def test_snippets_are_what_the_installer_writes() -> None:
    for name, version in (("config.toml", 2), ("config-v3.toml", 3)):
        text = (DEPLOY / "containerd" / name).read_text()
        assert add_runtime("", "c", version) in text, name
        assert add_runtime(text, "c") == text  # the installer finds its own block
