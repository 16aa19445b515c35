"""MRENCLAVE: the documented encoding, reproducible, and sensitive to every input."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.tee.sim.errors import MalformedStructure, SimError
from inclavare.tee.sim.files import (
    SIGNATURE_PATH,
    TrustedFileError,
    collect_trusted_files,
    find_entrypoint,
    measure,
    resolve_in_root,
)
from inclavare.tee.sim.measurement import (
    Manifest,
    RuntimeIdentity,
    TrustedFile,
    normalise_path,
    parse_manifest,
)

BOUNDED = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

NATIVE = RuntimeIdentity("builtin:native", "1")


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


FILES = [
    TrustedFile("/bin/app", digest("app")),
    TrustedFile("/lib/libc.so", digest("libc")),
    TrustedFile("/etc/app.conf", digest("conf")),
]


def test_encoding_is_the_documented_one() -> None:
    """Built here byte by byte from docs/sim-tee.md, independently of the implementation."""

    def string(text: str) -> bytes:
        return struct.pack("<I", len(text.encode())) + text.encode()

    expected = b"INCLAVARE-MEAS-1" + string("builtin:native") + string("1") + struct.pack("<I", 3)
    for path in ("/bin/app", "/etc/app.conf", "/lib/libc.so"):  # byte order of the paths
        expected += string(path) + next(f.sha256 for f in FILES if f.path == path)
    manifest = Manifest.of(NATIVE, FILES)
    assert manifest.encode() == expected
    assert manifest.mr_enclave == hashlib.sha256(expected).digest()


def test_order_of_the_inputs_does_not_matter() -> None:
    assert Manifest.of(NATIVE, FILES).mr_enclave == Manifest.of(NATIVE, FILES[::-1]).mr_enclave


@pytest.mark.parametrize(
    "changed",
    [
        Manifest.of(RuntimeIdentity("builtin:wasm", "1"), FILES),
        Manifest.of(RuntimeIdentity("builtin:native", "2"), FILES),
        Manifest.of(RuntimeIdentity("builtin:native", ""), FILES),
        Manifest.of(NATIVE, [TrustedFile("/bin/app2", digest("app")), *FILES[1:]]),
        Manifest.of(NATIVE, [TrustedFile("/bin/app", digest("app!")), *FILES[1:]]),
        Manifest.of(NATIVE, FILES[1:]),
        Manifest.of(NATIVE, [*FILES, TrustedFile("/bin/extra", digest(""))]),
    ],
    ids=["runtime", "version", "no-version", "path", "content", "fewer", "more"],
)
def test_every_input_changes_the_measurement(changed: Manifest) -> None:
    assert changed.mr_enclave != Manifest.of(NATIVE, FILES).mr_enclave


def test_every_digest_bit_changes_the_measurement() -> None:
    reference = Manifest.of(NATIVE, FILES).mr_enclave
    seen = {reference}
    for index in range(32):
        altered = bytearray(FILES[0].sha256)
        altered[index] ^= 0x01
        manifest = Manifest.of(NATIVE, [TrustedFile("/bin/app", bytes(altered)), *FILES[1:]])
        seen.add(manifest.mr_enclave)
    assert len(seen) == 33


def test_a_manifest_parses_back_to_itself() -> None:
    manifest = Manifest.of(NATIVE, FILES)
    assert parse_manifest(manifest.encode()) == manifest


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"INCLAVARE-MEAS-2" + bytes(12), "bad magic"),
        (Manifest.of(NATIVE, FILES).encode() + b"\0", "1 bytes after the end"),
        (Manifest.of(NATIVE, FILES).encode()[:-1], "truncated digest"),
        (b"INCLAVARE-MEAS-1" + struct.pack("<I", 5000), "longer than 256"),
    ],
)
def test_malformed_manifests_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(MalformedStructure, match=message):
        parse_manifest(data)


def test_unsorted_manifest_is_not_canonical() -> None:
    manifest = Manifest.of(NATIVE, FILES)
    reordered = Manifest(NATIVE, manifest.files[::-1]).encode()
    with pytest.raises(MalformedStructure, match="ascending"):
        parse_manifest(reordered)


@pytest.mark.parametrize("path", ["bin/app", "/", "/bin//app", "/bin/./app", "/a/../b", "/bin/"])
def test_trusted_paths_must_be_normalised(path: str) -> None:
    with pytest.raises(MalformedStructure):
        TrustedFile(path, bytes(32))


def test_normalise_path_stays_inside_the_root() -> None:
    assert normalise_path("../../etc/./passwd") == "/etc/passwd"
    assert normalise_path("/usr//bin/") == "/usr/bin"


def test_same_path_with_two_digests_is_refused() -> None:
    with pytest.raises(MalformedStructure, match="two digests"):
        Manifest.of(NATIVE, [TrustedFile("/a", bytes(32)), TrustedFile("/a", b"\1" * 32)])


# --- from a root file system ----------------------------------------------------------------


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"\x7fELF busybox")
    os.symlink("busybox", root / "bin" / "sh")
    (root / "app" / "lib").mkdir(parents=True)
    (root / "app" / "main.wasm").write_bytes(b"\0asm module")
    (root / "app" / "lib" / "util.py").write_text("x = 1\n")
    os.symlink("/bin/busybox", root / "app" / "shell")
    (root / ".inclavare").mkdir()
    (root / SIGNATURE_PATH).write_bytes(b"not measured")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    os.symlink("../../../../etc/passwd", root / "app" / "escape")
    return root


def test_measure_a_rootfs_is_reproducible(rootfs: Path, tmp_path: Path) -> None:
    first = measure(rootfs, NATIVE, ["/bin/sh", "/app"])
    copy = tmp_path / "copy"
    os.system(f"cp -a {rootfs} {copy}")
    assert measure(copy, NATIVE, ["/app", "/bin/sh"]).mr_enclave == first.mr_enclave
    assert first.paths == (
        "/app/escape",
        "/app/lib/util.py",
        "/app/main.wasm",
        "/app/shell",
        "/bin/sh",
    )


def test_symbolic_links_resolve_inside_the_root(rootfs: Path) -> None:
    assert resolve_in_root(rootfs, "/bin/sh") == rootfs / "bin" / "busybox"
    assert resolve_in_root(rootfs, "/app/shell") == rootfs / "bin" / "busybox"
    # A link climbing out of the root file system lands on the container's /etc/passwd.
    assert resolve_in_root(rootfs, "/app/escape") == rootfs / "etc" / "passwd"
    files = {f.path: f.sha256 for f in collect_trusted_files(rootfs, ["/app/escape"])}
    assert files == {"/app/escape": hashlib.sha256(b"root:x:0:0::/:/bin/sh\n").digest()}


def test_the_signature_file_is_never_measured(rootfs: Path) -> None:
    assert "/" + SIGNATURE_PATH not in measure(rootfs, NATIVE, ["/"]).paths


def test_changing_a_file_changes_the_measurement(rootfs: Path) -> None:
    before = measure(rootfs, NATIVE, ["/app"]).mr_enclave
    (rootfs / "app" / "lib" / "util.py").write_text("x = 2\n")
    assert measure(rootfs, NATIVE, ["/app"]).mr_enclave != before


def test_missing_and_special_files_are_named(rootfs: Path) -> None:
    with pytest.raises(TrustedFileError, match="trusted file /bin/none is missing"):
        collect_trusted_files(rootfs, ["/bin/none"])
    os.mkfifo(rootfs / "fifo")
    with pytest.raises(TrustedFileError, match="/fifo is not a regular file"):
        collect_trusted_files(rootfs, ["/fifo"])


def test_symlink_loops_are_refused(rootfs: Path) -> None:
    os.symlink("loop", rootfs / "loop")
    with pytest.raises(TrustedFileError, match="too many symbolic links"):
        resolve_in_root(rootfs, "/loop")


def test_entrypoint_is_found_in_path(rootfs: Path) -> None:
    assert find_entrypoint(rootfs, "sh", ["PATH=/usr/bin:/bin"]) == "/bin/sh"
    assert find_entrypoint(rootfs, "./main.wasm", [], cwd="/app") == "/app/main.wasm"
    assert find_entrypoint(rootfs, "/app/main.wasm") == "/app/main.wasm"
    with pytest.raises(TrustedFileError, match="'nothere' is not found in PATH /bin"):
        find_entrypoint(rootfs, "nothere", ["PATH=/bin"])


# --- property tests of the parser -----------------------------------------------------------

paths = st.lists(
    st.text(st.characters(blacklist_characters="/\0", codec="utf-8"), min_size=1, max_size=8)
    .filter(lambda part: part not in (".", ".."))
    .map(lambda part: "/" + part),
    max_size=6,
)


@BOUNDED
@given(
    name=st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    version=st.text(st.characters(codec="utf-8"), max_size=10),
    files=paths,
    seed=st.binary(min_size=1, max_size=4),
)
def test_any_manifest_round_trips(name: str, version: str, files: list[str], seed: bytes) -> None:
    manifest = Manifest.of(
        RuntimeIdentity(name, version),
        [TrustedFile(path, hashlib.sha256(seed + path.encode()).digest()) for path in files],
    )
    assert parse_manifest(manifest.encode()) == manifest


@BOUNDED
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    for candidate in (data, b"INCLAVARE-MEAS-1" + data):
        try:
            parse_manifest(candidate)
        except SimError:
            pass


@BOUNDED
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_mutated_manifests_parse_or_fail_cleanly(position: int, value: int) -> None:
    encoded = bytearray(Manifest.of(NATIVE, FILES).encode())
    encoded[position % len(encoded)] = value
    try:
        parsed = parse_manifest(bytes(encoded))
    except SimError:
        return
    assert parsed.encode() == bytes(encoded)
