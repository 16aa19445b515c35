"""The platform store: the simulated platform's identity on disk, created on first use.

It lives in /var/lib/inclavare/sim (INCLAVARE_SIM_DIR overrides): the directory is 0700 and
every file 0600. The root CA certificate is `root-ca.pem` there; give it to `shelter verify
--roots` to accept this host's simulated quotes.

First use is safe when several processes start at once: each builds a complete identity in a
private directory beside the store, and renames it into place. rename(2) is atomic and
fails when the store already holds files, so exactly one identity wins and the others read it.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

from inclavare.tee.sim.errors import PlatformError
from inclavare.tee.sim.identity import (
    ATTESTATION_KEY_FILE,
    PCK_CHAIN_FILE,
    PCK_KEY_FILE,
    PLATFORM_FILES,
    ROOT_CA_FILE,
    SECRET_FILE,
    create_platform_identity,
)
from inclavare.tee.sim.platform import SimPlatform

DEFAULT_SIM_DIR = "/var/lib/inclavare/sim"
SIM_DIR_VARIABLE = "INCLAVARE_SIM_DIR"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def sim_dir() -> Path:
    return Path(os.environ.get(SIM_DIR_VARIABLE) or DEFAULT_SIM_DIR)


def root_ca_path(directory: str | os.PathLike[str] | None = None) -> Path:
    return Path(directory or sim_dir()) / ROOT_CA_FILE


def boot_id() -> str:
    try:
        return Path(BOOT_ID_PATH).read_text().strip()
    except OSError as error:
        raise PlatformError(f"cannot read the boot id {BOOT_ID_PATH}: {error.strerror}") from None


def load_platform(directory: str | os.PathLike[str] | None = None) -> SimPlatform:
    """The platform of this host, its identity created first if there is none yet."""
    store = Path(directory or sim_dir())
    if not _complete(store):
        _create(store)
    return _read(store)


def _complete(store: Path) -> bool:
    try:
        present = set(os.listdir(store))
    except FileNotFoundError:
        return False
    except OSError as error:
        raise PlatformError(f"cannot read the sim platform {store}: {error.strerror}") from None
    missing = [name for name in PLATFORM_FILES if name not in present]
    if not missing:
        return True
    if present:
        raise PlatformError(
            f"the sim platform directory {store} is incomplete (missing {', '.join(missing)}); "
            "remove it to create a new platform identity"
        )
    return False


def _create(store: Path) -> None:
    files = create_platform_identity()
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{store.name}.new-", dir=store.parent))
    except OSError as error:
        raise PlatformError(f"cannot create the sim platform {store}: {error.strerror}") from None
    try:
        os.chmod(staging, 0o700)
        for name, content in files.items():
            _write_private(staging / name, content)
        _fsync(staging)
        try:
            os.rename(staging, store)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise PlatformError(
                    f"cannot create the sim platform {store}: {error.strerror}"
                ) from None
            return  # another process created it first; its identity is the platform's
        _fsync(store.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_private(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(content)
        stream.flush()
        os.fsync(stream.fileno())


def _fsync(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(store: Path) -> SimPlatform:
    mode = os.stat(store).st_mode
    if stat.S_IMODE(mode) & 0o077:
        raise PlatformError(
            f"the sim platform directory {store} is accessible to others "
            f"(mode {stat.S_IMODE(mode):04o}); it must be 0700"
        )
    contents: dict[str, bytes] = {}
    for name in PLATFORM_FILES:
        path = store / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as error:
            raise PlatformError(f"cannot read {path}: {error.strerror}") from None
        with os.fdopen(fd, "rb") as stream:
            file_mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if file_mode & 0o077:
                raise PlatformError(
                    f"{path} is accessible to others (mode {file_mode:04o}); it must be 0600"
                )
            contents[name] = stream.read()
    if len(contents[SECRET_FILE]) != 32:
        raise PlatformError(f"{store / SECRET_FILE} must hold 32 bytes")
    return SimPlatform(
        root_ca_pem=contents[ROOT_CA_FILE],
        pck_chain_pem=contents[PCK_CHAIN_FILE],
        pck_key_pem=contents[PCK_KEY_FILE],
        attestation_key_pem=contents[ATTESTATION_KEY_FILE],
        secret=contents[SECRET_FILE],
        boot_id=boot_id(),
        directory=str(store),
    )
