"""Trusted files of an enclave, read from a container's root file system.

Paths are resolved as the container will see them: symbolic links are followed inside the
root file system and never lead out of it ('..' stops at its root, absolute link targets
start from it). Only regular files are measured; a directory stands for every regular file
below it.

The root is a directory of the host, or any `FileTree` (an image's layers: the same rules
then measure an image without extracting it).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from inclavare.oci import paths
from inclavare.tee.sim.errors import LaunchRefused, MalformedStructure, SimError
from inclavare.tee.sim.launch import LaunchedEnclave, check_launch
from inclavare.tee.sim.measurement import Manifest, RuntimeIdentity, TrustedFile, normalise_path
from inclavare.tee.sim.sigstruct import (
    EnclaveSignature,
    parse_signature_file,
    sign_with_throwaway_key,
)

# Where an enclave's signature file lives, relative to the root file system.
SIGNATURE_PATH = ".inclavare/enclave.sig"


class TrustedFileError(SimError):
    """A trusted file cannot be read."""


class TrustedFileMissing(TrustedFileError):
    """A trusted file is not in the root file system."""


class FileTree(Protocol):
    """A root file system that is not a directory of the host: an image's layers.

    Paths are absolute inside the tree. `resolve` follows symbolic links inside the tree as
    `resolve_in_root` does; the others follow none.
    """

    def resolve(self, path: str) -> str: ...

    def kind(self, path: str) -> str | None:
        """ "file", "dir", "symlink", "other", or None when nothing is there."""
        ...

    def names(self, directory: str) -> list[str]: ...

    def sha256(self, path: str, shown_as: str) -> bytes: ...


Root = str | os.PathLike[str] | FileTree


def resolve_in_root(root: str | os.PathLike[str], path: str) -> Path:
    """The host path of `path` as seen from inside `root`, with symbolic links resolved."""
    return Path(root).joinpath(*_resolve_parts(Path(root), path))


def _resolve_parts(root_path: Path, path: str) -> list[str]:
    def link_target(parts: list[str]) -> str | None:
        candidate = root_path.joinpath(*parts)
        try:
            if not stat.S_ISLNK(os.lstat(candidate).st_mode):
                return None
            return os.readlink(candidate)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise TrustedFileError(f"cannot examine {path}: {error.strerror}") from None

    try:
        return paths.resolve(path, link_target)
    except paths.TooManyLinks as error:
        raise TrustedFileError(str(error)) from None


class HostTree:
    """A root file system that is a directory of the host."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def resolve(self, path: str) -> str:
        return "/" + "/".join(_resolve_parts(self.root, path))

    def host_path(self, path: str) -> Path:
        return self.root.joinpath(*[part for part in path.split("/") if part])

    def kind(self, path: str) -> str | None:
        try:
            mode = os.lstat(self.host_path(path)).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise TrustedFileError(f"cannot examine {path}: {error.strerror}") from None
        if stat.S_ISREG(mode):
            return "file"
        if stat.S_ISDIR(mode):
            return "dir"
        return "symlink" if stat.S_ISLNK(mode) else "other"

    def names(self, directory: str) -> list[str]:
        try:
            return sorted(os.listdir(self.host_path(directory)))
        except OSError as error:
            raise TrustedFileError(f"cannot list {directory}: {error.strerror}") from None

    def sha256(self, path: str, shown_as: str) -> bytes:
        return hash_file(self.host_path(path), shown_as)


def as_tree(root: Root) -> FileTree:
    return HostTree(root) if isinstance(root, (str, os.PathLike)) else root


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_entrypoint(root: Root, program: str, env: Iterable[str] = (), cwd: str = "/") -> str:
    """The path inside `root` of the program process.args[0] names, searched in PATH."""
    if not program:
        raise TrustedFileError("the container has no program to run (process.args is empty)")
    if "/" in program:
        return normalise_path(program if program.startswith("/") else f"{cwd}/{program}")
    tree = as_tree(root)
    search = DEFAULT_PATH
    for entry in env:
        if entry.startswith("PATH="):
            search = entry[5:]
    for directory in search.split(":"):
        if not directory.startswith("/"):
            continue
        candidate = normalise_path(f"{directory}/{program}")
        if tree.kind(tree.resolve(candidate)) == "file":
            return candidate
    raise TrustedFileMissing(f"the program {program!r} is not found in PATH {search}")


def hash_file(host_path: str | os.PathLike[str], shown_as: str) -> bytes:
    """SHA-256 of a regular file's content."""
    try:
        fd = os.open(host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TrustedFileMissing(f"trusted file {shown_as} is missing") from None
    except OSError as error:
        raise TrustedFileError(f"cannot read trusted file {shown_as}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TrustedFileError(f"trusted file {shown_as} is not a regular file")
        return hashlib.file_digest(stream, "sha256").digest()


def _digest(tree: FileTree, path: str) -> bytes:
    resolved = tree.resolve(path)
    kind = tree.kind(resolved)
    if kind is None:
        raise TrustedFileMissing(f"trusted file {path} is missing")
    if kind != "file":
        raise TrustedFileError(f"trusted file {path} is not a regular file")
    return tree.sha256(resolved, path)


def digest_or_none(root: Root, path: str) -> bytes | None:
    """The SHA-256 of trusted file `path` in `root`, or None when it is absent."""
    try:
        return _digest(as_tree(root), path)
    except TrustedFileMissing:
        return None


def collect_trusted_files(root: Root, paths: Iterable[str]) -> list[TrustedFile]:
    """The trusted files named by `paths` (files or directories) with their digests."""
    tree = as_tree(root)
    files: dict[str, TrustedFile] = {}
    for given in paths:
        try:
            path = normalise_path(given)
        except MalformedStructure as error:
            raise TrustedFileError(str(error)) from None
        if tree.kind(tree.resolve(path)) == "dir":
            for inner in _files_below(tree, path):
                files[inner] = TrustedFile(inner, _digest(tree, inner))
        else:
            files[path] = TrustedFile(path, _digest(tree, path))
    return list(files.values())


def _files_below(tree: FileTree, directory: str) -> list[str]:
    found: list[str] = []
    resolved = tree.resolve(directory)
    for name in tree.names(resolved):
        path = f"{directory.rstrip('/')}/{name}"
        if path == "/" + SIGNATURE_PATH:
            continue  # the signature is not part of what it signs
        kind = tree.kind(f"{resolved.rstrip('/')}/{name}")
        if kind == "dir":
            found.extend(_files_below(tree, path))
        elif kind == "file" or (kind == "symlink" and tree.kind(tree.resolve(path)) == "file"):
            found.append(path)
    return found


def measure(root: Root, runtime: RuntimeIdentity, paths: Iterable[str]) -> Manifest:
    """The measurement manifest of the files `paths` in `root`, for `runtime`."""
    return Manifest.of(runtime, collect_trusted_files(root, paths))


def read_signature(path: str | os.PathLike[str]) -> EnclaveSignature | None:
    """The signature file at `path`, or None when there is none."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise SimError(f"cannot read the enclave signature {path}: {error.strerror}") from None
    try:
        return parse_signature_file(data)
    except MalformedStructure as error:
        raise LaunchRefused(f"enclave launch refused: {path}: {error}") from None


def write_signature(path: str | os.PathLike[str], signature: EnclaveSignature) -> None:
    """Write the signature file atomically. The temporary file is created, never opened
    through an existing name, so a link planted in a root file system cannot redirect the
    write; rename(2) replaces a link at `path` rather than following it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o644)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(signature.encode())
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class LaunchRequest:
    """What the launch of a sim enclave needs from the container."""

    rootfs: str
    runtime: RuntimeIdentity
    entrypoint: str  # path inside the root file system, resolved from process.args[0]
    trusted: tuple[str, ...] = ()  # more trusted paths, for an enclave nobody signed
    signature_path: str | None = None  # default: SIGNATURE_PATH inside the rootfs


def launch_enclave(request: LaunchRequest) -> LaunchedEnclave:
    """Measure the enclave in the container and run the launch check.

    A signed enclave (a signature file in the root file system, or the one the request
    names) is launched only if its signature holds and every trusted file is as signed. An
    enclave without one is measured now (its entrypoint and `trusted` paths) and signed with
    a throwaway key, as a debug enclave.
    """
    signature_path = request.signature_path or os.path.join(request.rootfs, SIGNATURE_PATH)
    signature = read_signature(signature_path)
    if signature is None and request.signature_path is not None:
        raise LaunchRefused(f"enclave launch refused: the signature {signature_path} is missing")
    entrypoint = normalise_path(request.entrypoint)
    try:
        if signature is None:
            manifest = measure(request.rootfs, request.runtime, (entrypoint, *request.trusted))
            signature = sign_with_throwaway_key(manifest)
            signed = False
        else:
            signed = True
        measured = {path: digest_or_none(request.rootfs, path) for path in signature.manifest.paths}
    except TrustedFileError as error:
        raise LaunchRefused(f"enclave launch refused: {error}") from None
    return check_launch(signature, request.runtime, measured, (entrypoint,), signed)
