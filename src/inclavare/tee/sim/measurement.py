"""MRENCLAVE of a sim enclave: SHA-256 over a canonical encoding of what it loads. Pure.

The encoding (the *measurement manifest*) names the enclave runtime and its version, then
every trusted file by its path inside the container's root file system and the SHA-256 of
its content, in byte order of the paths. Integers are little-endian:

    16 bytes   ASCII "INCLAVARE-MEAS-1"
    u32        length of the runtime name, then its UTF-8 bytes
    u32        length of the runtime version, then its UTF-8 bytes
    u32        number of trusted files
    per file:  u32 length of the path, its UTF-8 bytes, then 32 bytes of SHA-256

MRENCLAVE = SHA-256(manifest). Arguments and environment are not measured (as in SGX). The
manifest travels with the enclave's signature, so anyone holding the image can recompute
the measurement, and a launch that finds a different file can say which one.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from inclavare.oci import paths
from inclavare.tee.sim.errors import MalformedStructure

MAGIC = b"INCLAVARE-MEAS-1"
MAX_NAME = 256
MAX_PATH = 4096
MAX_FILES = 1 << 20

# The runtimes built into rune, and the version their measurement names. A PAL loaded from
# a shared object is named by its file name (see `RuntimeIdentity.for_runtime_path`).
BUILTIN_RUNTIME_VERSIONS = {"builtin:wasm": "1", "builtin:native": "1"}


@dataclass(frozen=True)
class RuntimeIdentity:
    """The enclave runtime an enclave is measured for: a name and a version."""

    name: str
    version: str = ""

    def __post_init__(self) -> None:
        for field, value in (("name", self.name), ("version", self.version)):
            encoded = _utf8(value, f"runtime {field}")
            if len(encoded) > MAX_NAME:
                raise MalformedStructure(f"runtime {field} is longer than {MAX_NAME} bytes")
        if not self.name:
            raise MalformedStructure("the runtime name is empty")

    @classmethod
    def for_runtime_path(cls, runtime_path: str) -> RuntimeIdentity:
        """The identity of the runtime at ENCLAVE_RUNTIME_PATH (a builtin or a PAL file)."""
        if runtime_path in BUILTIN_RUNTIME_VERSIONS:
            return cls(runtime_path, BUILTIN_RUNTIME_VERSIONS[runtime_path])
        return cls("pal:" + runtime_path.rstrip("/").rsplit("/", 1)[-1])

    @classmethod
    def parse(cls, text: str) -> RuntimeIdentity:
        """`NAME` or `NAME@VERSION`."""
        name, _, version = text.partition("@")
        return cls(name, version)

    def __str__(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


@dataclass(frozen=True)
class TrustedFile:
    path: str
    sha256: bytes

    def __post_init__(self) -> None:
        check_path(self.path)
        if len(self.sha256) != 32:
            raise MalformedStructure(f"trusted file {self.path}: SHA-256 must be 32 bytes")


def check_path(path: str) -> str:
    """`path` if it is a normalised absolute path ("/usr/bin/app"), else an error."""
    encoded = _utf8(path, "trusted file path")
    if not path.startswith("/"):
        raise MalformedStructure(f"trusted file path {path!r} must be absolute")
    if path == "/":
        raise MalformedStructure("a trusted file path must name a file, not /")
    if len(encoded) > MAX_PATH:
        raise MalformedStructure(f"trusted file path is longer than {MAX_PATH} bytes")
    parts = path[1:].split("/")
    if any(part in ("", ".", "..") for part in parts) or "\0" in path:
        raise MalformedStructure(
            f"trusted file path {path!r} is not normalised (no '.', '..', '//' or trailing '/')"
        )
    return path


def normalise_path(path: str) -> str:
    """An absolute, normalised form of `path` inside the root file system ('..' stops at /).

    The root itself comes out as "/"."""
    normalised = paths.normalise(path)
    return check_path(normalised) if normalised != "/" else "/"


@dataclass(frozen=True)
class Manifest:
    """The measured content of an enclave: its runtime and its trusted files, sorted by path."""

    runtime: RuntimeIdentity
    files: tuple[TrustedFile, ...]

    @classmethod
    def of(cls, runtime: RuntimeIdentity, files: Iterable[TrustedFile]) -> Manifest:
        by_path: dict[str, TrustedFile] = {}
        for file in files:
            previous = by_path.setdefault(file.path, file)
            if previous.sha256 != file.sha256:
                raise MalformedStructure(f"trusted file {file.path} is listed with two digests")
        ordered = sorted(by_path.values(), key=lambda file: _path_bytes(file.path))
        if len(ordered) > MAX_FILES:
            raise MalformedStructure(f"more than {MAX_FILES} trusted files")
        return cls(runtime, tuple(ordered))

    def encode(self) -> bytes:
        parts = [
            MAGIC,
            _string(self.runtime.name),
            _string(self.runtime.version),
            struct.pack("<I", len(self.files)),
        ]
        for file in self.files:
            parts.append(_string(file.path, _path_bytes(file.path)))
            parts.append(file.sha256)
        return b"".join(parts)

    @property
    def mr_enclave(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    def digest_of(self, path: str) -> bytes | None:
        for file in self.files:
            if file.path == path:
                return file.sha256
        return None

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(file.path for file in self.files)


def parse_manifest(data: bytes) -> Manifest:
    """The manifest encoded in `data`, which must be in its one canonical form."""
    data = bytes(data)
    if data[:16] != MAGIC:
        raise MalformedStructure("measurement manifest: bad magic (expected INCLAVARE-MEAS-1)")
    offset = 16
    name, offset = _read_string(data, offset, MAX_NAME, "runtime name")
    version, offset = _read_string(data, offset, MAX_NAME, "runtime version")
    count, offset = _read_u32(data, offset, "file count")
    if count > MAX_FILES:
        raise MalformedStructure(f"measurement manifest: {count} files is more than allowed")
    files = []
    previous: bytes | None = None
    for index in range(count):
        path, offset = _read_string(data, offset, MAX_PATH, f"path of file {index}")
        digest = data[offset : offset + 32]
        if len(digest) != 32:
            raise MalformedStructure(f"measurement manifest: truncated digest of {path!r}")
        offset += 32
        raw_path = _path_bytes(path)
        if previous is not None and raw_path <= previous:
            raise MalformedStructure("measurement manifest: paths not in strictly ascending order")
        previous = raw_path
        files.append(TrustedFile(path, digest))
    if offset != len(data):
        raise MalformedStructure(f"measurement manifest: {len(data) - offset} bytes after the end")
    return Manifest(RuntimeIdentity(name, version), tuple(files))


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedStructure(f"{what} {text!r} is not valid UTF-8") from None


def _path_bytes(path: str) -> bytes:
    return path.encode("utf-8")


def _string(text: str, encoded: bytes | None = None) -> bytes:
    raw = encoded if encoded is not None else text.encode("utf-8")
    return struct.pack("<I", len(raw)) + raw


def _read_u32(data: bytes, offset: int, what: str) -> tuple[int, int]:
    if offset + 4 > len(data):
        raise MalformedStructure(f"measurement manifest: truncated {what}")
    return int.from_bytes(data[offset : offset + 4], "little"), offset + 4


def _read_string(data: bytes, offset: int, limit: int, what: str) -> tuple[str, int]:
    size, offset = _read_u32(data, offset, f"length of the {what}")
    if size > limit:
        raise MalformedStructure(f"measurement manifest: {what} longer than {limit} bytes")
    raw = data[offset : offset + size]
    if len(raw) != size:
        raise MalformedStructure(f"measurement manifest: truncated {what}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedStructure(f"measurement manifest: {what} is not UTF-8") from None
    return text, offset + size
