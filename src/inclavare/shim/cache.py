"""The carrier's conversion cache: enclave signatures already made, on the node's disk.

An entry is keyed by what the signature vouches for and who signed it: the SHA-256 of the
measurement manifest (the enclave runtime's identity and the path and SHA-256 of every
trusted file, i.e. the image's content as the enclave sees it), the ISV fields, and the
signer's identity (the MRSIGNER of a local key; the address of a signing server). A second
container of the same image, runtime and signer gets its signature from here instead of the
key or the server.

An entry file `<key>.entry` is `INCLAVARE-CACHE-1`, the SHA-256 of the rest, and the
signature file (SIGSTRUCT and manifest). It is used only if its checksum holds, it parses,
its manifest is byte for byte the one just measured and its signature verifies; otherwise it
is deleted, logged, and rebuilt. Entries are written to a temporary file and renamed, so a
reader sees a whole entry or none; concurrent Creates of one image may both sign, and the
last rename wins. An entry's mtime is its last use: above `max_size` bytes the least
recently used entries go (under the directory's lock file). A directory that cannot be
created, written or is full costs only the caching, with a log line.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
from collections.abc import Callable

from inclavare.tee.sim.errors import SimError
from inclavare.tee.sim.sigstruct import EnclaveSignature, parse_signature_file

MAGIC = b"INCLAVARE-CACHE-1"
SUFFIX = ".entry"
LOCK = ".lock"
_HEADER = len(MAGIC) + 32


def cache_key(manifest_bytes: bytes, signer: str, isv_prod_id: int = 0, isv_svn: int = 0) -> str:
    """The entry name of an enclave's signature by a signer."""
    digest = hashlib.sha256()
    for part in (
        b"carrier-cache-1",
        hashlib.sha256(manifest_bytes).digest(),
        signer.encode(),
        f"{isv_prod_id}:{isv_svn}".encode(),
    ):
        digest.update(len(part).to_bytes(4, "big") + part)
    return digest.hexdigest()


class ConversionCache:
    def __init__(self, directory: str, max_size: int, log: Callable[[str], None]) -> None:
        self.directory = directory
        self.max_size = max_size
        self.log = log
        self.enabled = max_size > 0
        self._local = threading.Lock()

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key + SUFFIX)

    def get(self, key: str, manifest_bytes: bytes) -> EnclaveSignature | None:
        """The cached signature of this manifest, or None (a miss, or a bad entry removed)."""
        if not self.enabled:
            return None
        path = self._path(key)
        try:
            with open(path, "rb") as stream:
                data = stream.read()
        except FileNotFoundError:
            return None
        except OSError as error:
            self.log(f"carrier cache: cannot read {path}: {error.strerror}; signing anew")
            return None
        problem = _check(data, manifest_bytes)
        if isinstance(problem, str):
            self.log(f"carrier cache: discarding {path}: {problem}")
            try:
                os.unlink(path)
            except OSError:
                pass
            return None
        try:
            os.utime(path)  # the entry's last use, for the LRU eviction
        except OSError:
            pass
        return problem

    def put(self, key: str, signature: EnclaveSignature) -> None:
        """Store a signature; trouble with the directory disables nothing but this entry."""
        if not self.enabled:
            return
        payload = signature.encode()
        data = MAGIC + hashlib.sha256(payload).digest() + payload
        if len(data) > self.max_size:
            return
        path = self._path(key)
        temporary = os.path.join(
            self.directory, f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        )
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temporary, flags, 0o600)
            try:
                with os.fdopen(fd, "wb") as stream:
                    stream.write(data)
                os.rename(temporary, path)
            except BaseException:
                _unlink(temporary)
                raise
            self._evict(keep=path)
        except OSError as error:
            reason = error.strerror or str(error)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                reason += " (the cache directory is full)"
            self.log(
                f"carrier cache: cannot store in {self.directory}: {reason}; "
                "continuing without caching"
            )

    def _evict(self, keep: str) -> None:
        with self._local, _Lock(os.path.join(self.directory, LOCK)):
            entries = []
            total = 0
            with os.scandir(self.directory) as listing:
                for entry in listing:
                    if not entry.name.endswith(SUFFIX):
                        continue
                    try:
                        status = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    entries.append((status.st_mtime_ns, entry.path, status.st_size))
                    total += status.st_size
            entries.sort()
            for _, path, size in entries:
                if total <= self.max_size:
                    break
                if path == keep:
                    continue
                _unlink(path)
                total -= size
                self.log(f"carrier cache: evicted {os.path.basename(path)} (least recently used)")

    def entries(self) -> list[str]:
        try:
            return sorted(name for name in os.listdir(self.directory) if name.endswith(SUFFIX))
        except OSError:
            return []


def _check(data: bytes, manifest_bytes: bytes) -> EnclaveSignature | str:
    if len(data) < _HEADER or data[: len(MAGIC)] != MAGIC:
        return "not a cache entry"
    payload = data[_HEADER:]
    if hashlib.sha256(payload).digest() != data[len(MAGIC) : _HEADER]:
        return "checksum mismatch (corrupted)"
    try:
        signature = parse_signature_file(payload)
        signature.verify()
    except SimError as error:
        return f"bad signature: {error}"
    if signature.manifest_bytes != manifest_bytes:
        return "its manifest is not the one measured"
    return signature


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _Lock:
    """An exclusive flock(2) on a lock file, between shims of the node."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
