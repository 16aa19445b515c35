"""The carrier's conversion cache: hits, misses, LRU eviction, corrupted entries, and a
directory that is full, read-only or shared by concurrent writers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.shim.cache import ConversionCache, cache_key
from inclavare.tee.sim.measurement import Manifest, RuntimeIdentity, TrustedFile
from inclavare.tee.sim.sigstruct import (
    EnclaveSignature,
    generate_signing_key,
    key_signer,
    sign_enclave_with,
)


@pytest.fixture(scope="module")
def signer() -> object:
    return key_signer(generate_signing_key())


def manifest(name: str) -> Manifest:
    return Manifest.of(
        RuntimeIdentity.for_runtime_path("builtin:native"),
        [TrustedFile(f"/bin/{name}", hashlib.sha256(name.encode()).digest())],
    )


def signed(signer: object, name: str) -> tuple[str, bytes, EnclaveSignature]:
    measured = manifest(name)
    signature = sign_enclave_with(signer, measured)  # type: ignore[arg-type]
    manifest_bytes = measured.encode()
    return cache_key(manifest_bytes, "key test"), manifest_bytes, signature


class Log(list[str]):
    def __call__(self, line: str) -> None:
        self.append(line)


def test_a_miss_then_a_hit(tmp_path: Path, signer: object) -> None:
    log = Log()
    cache = ConversionCache(str(tmp_path / "cache"), 1 << 20, log)
    key, manifest_bytes, signature = signed(signer, "app")
    assert cache.get(key, manifest_bytes) is None
    cache.put(key, signature)
    hit = cache.get(key, manifest_bytes)
    assert hit is not None and hit.encode() == signature.encode()
    assert log == []


def test_the_key_names_manifest_signer_and_isv_fields() -> None:
    one, other = manifest("a").encode(), manifest("b").encode()
    keys = {
        cache_key(one, "key x"),
        cache_key(other, "key x"),
        cache_key(one, "server https://s"),
        cache_key(one, "key x", isv_svn=1),
    }
    assert len(keys) == 4


def test_an_entry_for_another_manifest_is_not_used(tmp_path: Path, signer: object) -> None:
    log = Log()
    cache = ConversionCache(str(tmp_path), 1 << 20, log)
    key, _, signature = signed(signer, "app")
    cache.put(key, signature)
    assert cache.get(key, manifest("other").encode()) is None
    assert "its manifest is not the one measured" in log[-1]
    assert cache.entries() == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "checksum mismatch (corrupted)"),
        (lambda data: data[:100], "checksum mismatch"),
        (lambda data: b"garbage", "not a cache entry"),
        (lambda data: b"", "not a cache entry"),
    ],
)
def test_a_corrupted_entry_is_discarded_and_rebuilt(
    tmp_path: Path, signer: object, damage: object, message: str
) -> None:
    log = Log()
    cache = ConversionCache(str(tmp_path), 1 << 20, log)
    key, manifest_bytes, signature = signed(signer, "app")
    cache.put(key, signature)
    entry = tmp_path / f"{key}.entry"
    entry.write_bytes(damage(entry.read_bytes()))  # type: ignore[operator]
    assert cache.get(key, manifest_bytes) is None
    assert message in log[-1] and not entry.exists()
    cache.put(key, signature)
    assert cache.get(key, manifest_bytes) is not None


def test_an_entry_with_a_consistent_checksum_but_a_forged_signature_is_refused(
    tmp_path: Path, signer: object
) -> None:
    from inclavare.shim.cache import MAGIC

    log = Log()
    cache = ConversionCache(str(tmp_path), 1 << 20, log)
    key, manifest_bytes, signature = signed(signer, "app")
    payload = bytearray(signature.encode())
    payload[20 + 600] ^= 1  # a byte of the RSA signature inside SIGSTRUCT
    (tmp_path / f"{key}.entry").write_bytes(
        MAGIC + hashlib.sha256(payload).digest() + bytes(payload)
    )
    assert cache.get(key, manifest_bytes) is None
    assert "bad signature" in log[-1]


def test_least_recently_used_entries_are_evicted(tmp_path: Path, signer: object) -> None:
    entries = [signed(signer, name) for name in ("a", "b", "c")]
    size = len(entries[0][2].encode()) + 49
    log = Log()
    cache = ConversionCache(str(tmp_path), 2 * size + 10, log)
    cache.put(entries[0][0], entries[0][2])
    cache.put(entries[1][0], entries[1][2])
    # "a" is used after "b": "b" is the least recently used when "c" arrives
    os.utime(tmp_path / f"{entries[1][0]}.entry", ns=(1, 1))
    assert cache.get(entries[0][0], entries[0][1]) is not None
    cache.put(entries[2][0], entries[2][2])
    assert cache.get(entries[1][0], entries[1][1]) is None
    assert cache.get(entries[0][0], entries[0][1]) is not None
    assert cache.get(entries[2][0], entries[2][1]) is not None
    assert any("evicted" in line for line in log)


def test_a_zero_size_disables_the_cache(tmp_path: Path, signer: object) -> None:
    cache = ConversionCache(str(tmp_path / "never"), 0, Log())
    key, manifest_bytes, signature = signed(signer, "app")
    cache.put(key, signature)
    assert cache.get(key, manifest_bytes) is None
    assert not (tmp_path / "never").exists()


def test_a_read_only_directory_degrades_to_no_caching(tmp_path: Path, signer: object) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    log = Log()
    cache = ConversionCache(str(directory), 1 << 20, log)
    key, manifest_bytes, signature = signed(signer, "app")
    subprocess.run(["mount", "--bind", "-o", "ro", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
        cache.put(key, signature)
    finally:
        subprocess.run(["umount", str(directory)], check=True)
    assert "Read-only file system; continuing without caching" in log[-1]
    assert cache.get(key, manifest_bytes) is None


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    directory = tmp_path / "tiny"
    directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_a_full_directory_degrades_to_no_caching(tiny_tmpfs: Path, signer: object) -> None:
    (tiny_tmpfs / "filler").write_bytes(b"x" * 8192)
    log = Log()
    cache = ConversionCache(str(tiny_tmpfs), 1 << 20, log)
    key, manifest_bytes, signature = signed(signer, "app")
    cache.put(key, signature)
    assert "(the cache directory is full); continuing without caching" in log[-1]
    assert cache.get(key, manifest_bytes) is None
    assert sorted(os.listdir(tiny_tmpfs)) == ["filler"]  # no temporary file left


def test_concurrent_writers_leave_one_whole_entry(tmp_path: Path, signer: object) -> None:
    key, manifest_bytes, signature = signed(signer, "app")
    log = Log()
    caches = [ConversionCache(str(tmp_path), 1 << 20, log) for _ in range(8)]
    threads = [threading.Thread(target=cache.put, args=(key, signature)) for cache in caches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log == []
    assert sorted(os.listdir(tmp_path)) == [".lock", f"{key}.entry"]
    assert caches[0].get(key, manifest_bytes) is not None
