"""Path resolution inside a rootfs and mount option parsing (no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inclavare.linux.constants import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_SLAVE,
    MS_STRICTATIME,
)
from inclavare.runtime.rootfs import RootfsError, parse_mount_options, secure_join


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    os.symlink("/usr/lib", tmp_path / "lib")  # absolute: means <rootfs>/usr/lib
    os.symlink("../../../../..", tmp_path / "escape")  # climbs out of the rootfs
    os.symlink("/../../etc", tmp_path / "escape-absolute")
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    return tmp_path


@pytest.mark.parametrize(
    ("unsafe", "expected"),
    [
        ("/etc/hosts", "etc/hosts"),
        ("/lib/modules", "usr/lib/modules"),
        ("/escape/etc/passwd", "etc/passwd"),
        ("/escape-absolute/shadow", "etc/shadow"),
        ("/../../../etc", "etc"),
        ("/usr/./lib/../lib", "usr/lib"),
        ("/does/not/exist", "does/not/exist"),
        ("/", ""),
    ],
)
def test_paths_stay_inside_the_rootfs(rootfs: Path, unsafe: str, expected: str) -> None:
    wanted = os.path.join(str(rootfs), expected) if expected else str(rootfs)
    assert secure_join(str(rootfs), unsafe) == wanted


def test_symlink_loops_are_an_error(rootfs: Path) -> None:
    with pytest.raises(RootfsError, match="too many levels of symbolic links"):
        secure_join(str(rootfs), "/loop1/x")


def test_mount_options_split_into_flags_propagation_and_data() -> None:
    flags, propagation, data = parse_mount_options(
        ["nosuid", "strictatime", "mode=755", "size=65536k", "rslave", "ro"]
    )
    assert flags == MS_NOSUID | MS_STRICTATIME | MS_RDONLY
    assert propagation == [MS_SLAVE | MS_REC]
    assert data == "mode=755,size=65536k"


def test_later_options_override_earlier_ones() -> None:
    flags, _, _ = parse_mount_options(["ro", "rw", "nodev", "dev", "noexec"])
    assert flags == MS_NOEXEC
    flags, propagation, _ = parse_mount_options(["rbind", "private"])
    assert flags == MS_BIND | MS_REC
    assert propagation == [MS_PRIVATE]
    assert parse_mount_options(["defaults"])[0] == 0
    assert parse_mount_options(["nodev"])[0] == MS_NODEV


def test_unsupported_runc_extensions_are_refused() -> None:
    with pytest.raises(RootfsError, match="'idmap' is not supported"):
        parse_mount_options(["idmap"])
