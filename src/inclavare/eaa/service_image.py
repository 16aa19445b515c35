"""The sample confidential workload as a container image: the enclave attestation service
(service.py) with the Python that runs it, and busybox-static, built from this host's files.

What goes in is found by running the service once: a probe process starts the service and
a client in one interpreter, has them complete an attestation, a sealed secret and echoed
application data over Enclave-TLS (so every lazily imported module is loaded), and lists
each module file and each mapped shared object. The image holds exactly those files (and
their compiled bytecode), under the same paths for the system's files and under
/opt/inclavare for the project's and its packages':

    /usr/bin/python3.11, /usr/lib/python3.11/..., the shared libraries it maps
    /opt/inclavare/src/inclavare/...          the project's modules
    /opt/inclavare/site-packages/...          cryptography, cbor2, pyOpenSSL, ...
    /opt/inclavare/enclave-service.py         the entry script
    /usr/bin/busybox (and /bin/sh)            for a shell in the container

The program is the interpreter (`python3.11 -I -S /opt/inclavare/enclave-service.py`), an
unmodified Linux program as builtin:native runs it; every file it reads is a trusted file
(TRUSTED_PATHS), so the measurement covers the service's code and the packages it uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from inclavare.errors import InclavareError

PYTHON = "/usr/bin/python3.11"
BUSYBOX = "/bin/busybox"
PREFIX = "/opt/inclavare"
ENTRY_SCRIPT = f"{PREFIX}/enclave-service.py"
TRUSTED_PATHS = ("/usr", "/opt/inclavare")
DEFAULT_PORT = 7400
ENTRY_TEXT = f"""import sys
sys.path[:0] = ["{PREFIX}/src", "{PREFIX}/site-packages"]
from inclavare.cli.enclave_service import main
sys.exit(main())
"""

# Run in the probe interpreter: one full exchange, then print the files it used.
PROBE = r"""
import asyncio, json, os, sys, tempfile
sys.path[:0] = json.loads(sys.argv[1])
os.environ["INCLAVARE_SIM_DIR"] = tempfile.mkdtemp()
from inclavare.cli import enclave_service, shelter, shelter_remote, inclavared  # noqa
from inclavare.eaa import protocol, remote, secret, service
from inclavare.eaa.address import Address
from inclavare.tls.config import Config
from inclavare.tls.endpoint import EnclaveTls
from inclavare.tls import aio

async def exchange():
    server_tls = EnclaveTls(Config(attester="sim", mutual=True, allow_simulated=True), server=True)
    client_tls = EnclaveTls(Config(attester="sim", mutual=True, allow_simulated=True), server=False)
    svc = service.EnclaveService(server_tls)
    server = await service.serve(svc, "tcp://127.0.0.1:0")
    session = await aio.open_connection(client_tls, "127.0.0.1", server.address[1])
    key = secret.SecretKey()
    key.open(secret.seal(key.public, b"probe", "probe", b"n" * 32), "probe", b"n" * 32)
    session.write(protocol.encode(protocol.message("get-evidence", nonce=os.urandom(32))))
    await session.drain()
    await session.read()
    session.write(protocol.encode(protocol.message("connect")))
    await session.drain()
    await session.read()
    session.write(b"ping")
    await session.drain()
    await session.read()
    await session.close()
    await server.close()

asyncio.run(exchange())
files = set()
for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None)
    if path:
        files.add(os.path.realpath(path))
        cached = getattr(module, "__cached__", None)
        if cached and os.path.exists(cached):
            files.add(os.path.realpath(cached))
with open("/proc/self/maps") as maps:
    for line in maps:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            files.add(parts[5].strip())
print(json.dumps(sorted(files)))
"""


class ImageBuildError(InclavareError):
    """The service image cannot be built on this host."""


@dataclass(frozen=True)
class ServiceImage:
    rootfs: Path
    files: int
    size: int


def source_paths() -> tuple[Path, Path]:
    """(the project's source directory, the site-packages with its dependencies)."""
    import inclavare

    src = Path(inclavare.__file__).resolve().parent.parent
    import cbor2

    site = Path(cbor2.__file__).resolve().parent.parent
    return src, site


def probe_files(python: str = PYTHON) -> list[str]:
    """The host files one attestation exchange of the service uses."""
    src, site = source_paths()
    result = subprocess.run(
        [python, "-I", "-S", "-c", PROBE, json.dumps([str(src), str(site)])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ImageBuildError(f"the probe of the service's files failed: {last}")
    files: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return files


def image_path(host_path: str, src: Path, site: Path) -> str | None:
    """Where a host file goes in the image (None: it is not part of the image)."""
    path = Path(host_path)
    for base, target in ((src, f"{PREFIX}/src"), (site, f"{PREFIX}/site-packages")):
        if path.is_relative_to(base):
            return f"{target}/{path.relative_to(base)}"
    if host_path.startswith(("/usr/", "/lib", "/bin/", "/sbin/")) and not host_path.startswith(
        "/usr/local/"
    ):
        return host_path
    return None


def build_rootfs(rootfs: Path, python: str = PYTHON) -> ServiceImage:
    """Fill `rootfs` (a new or empty directory) with the service image's files."""
    if not os.path.exists(BUSYBOX):
        raise ImageBuildError(f"{BUSYBOX} is missing: install busybox-static")
    src, site = source_paths()
    rootfs.mkdir(parents=True, exist_ok=True)
    for directory in ("proc", "sys", "dev", "tmp", "etc", "run", "root"):
        (rootfs / directory).mkdir(exist_ok=True)
    # The host's top-level links (merged /usr: /lib -> usr/lib, ...), so that the paths a
    # program has compiled in (its ELF interpreter) resolve the same way.
    for name in ("bin", "sbin", "lib", "lib64", "libx32", "lib32"):
        host = Path("/") / name
        if host.is_symlink():
            link_target = os.readlink(host)
            (rootfs / link_target.lstrip("/")).mkdir(parents=True, exist_ok=True)
            _link(rootfs / name, link_target)
    wanted = {python, BUSYBOX, *probe_files(python)}
    interpreter = elf_interpreter(python)
    if interpreter:
        wanted.add(interpreter)
    wanted |= _library_names(wanted)
    count = size = 0
    for host_path in sorted(wanted):
        for source in _with_link_chain(host_path):
            target = image_path(source, src, site)
            if target is None:
                continue
            added = _copy(source, rootfs / target.lstrip("/"))
            count += added
            size += os.path.getsize(source) if added else 0
    (rootfs / "usr/bin").mkdir(parents=True, exist_ok=True)
    if not (rootfs / "bin/sh").exists():
        _link(rootfs / "usr/bin/sh", "busybox")
    entry = rootfs / ENTRY_SCRIPT.lstrip("/")
    entry.write_text(ENTRY_TEXT)
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc/group").write_text("root:x:0:\n")
    (rootfs / "etc/hosts").write_text("127.0.0.1 localhost\n")
    return ServiceImage(rootfs, count + 1, size + len(ENTRY_TEXT))


def elf_interpreter(path: str) -> str | None:
    """The program interpreter (PT_INTERP) a 64-bit little-endian ELF executable names."""
    import struct

    with open(path, "rb") as program:
        header = program.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            return None
        (phoff,) = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        program.seek(phoff)
        table = program.read(phentsize * phnum)
        for index in range(phnum):
            kind, _, offset, _, _, size = struct.unpack_from("<IIQQQQ", table, index * phentsize)
            if kind == 3:  # PT_INTERP
                program.seek(offset)
                return program.read(size).rstrip(b"\0").decode()
    return None


def process_args(listen: str) -> list[str]:
    """The container's process.args for the service listening on `listen`."""
    return [PYTHON, "-I", "-S", ENTRY_SCRIPT, "--listen", listen]


def _library_names(files: set[str]) -> set[str]:
    """The symbolic links (sonames such as libz.so.1) next to each shared library in
    `files`, by which the dynamic loader finds it."""
    libraries = {path for path in files if ".so" in os.path.basename(path)}
    names = set()
    for directory in {os.path.dirname(path) for path in libraries}:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink() and os.path.realpath(entry.path) in libraries:
                names.add(entry.path)
    return names


def _with_link_chain(path: str) -> list[str]:
    """`path` and, when it is reached through symbolic links, each link on the way, so that
    the image resolves it the same way (e.g. /lib64/ld-linux-x86-64.so.2)."""
    chain = []
    current = path
    for _ in range(40):
        chain.append(current)
        if not os.path.islink(current):
            break
        current = os.path.join(os.path.dirname(current), os.readlink(current))
        current = os.path.normpath(current)
    return chain


def _copy(source: str, target: Path) -> int:
    if target.exists() or target.is_symlink():
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
        return 0
    if not os.path.isfile(source):
        return 0
    shutil.copy2(source, target)  # keeps the mtime that compiled bytecode is checked against
    return 1


def _link(path: Path, target: str) -> None:
    if not path.exists() and not path.is_symlink():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)


# --- an OCI image layout of the root file system ---------------------------------------------


def write_layout(rootfs: Path, layout: Path, tag: str = "latest", listen: str = "") -> str:
    """Write `rootfs` as a one-layer OCI image layout at `layout`; returns the manifest
    digest. The image's command runs the service on `listen` (default port 7400)."""
    layout.mkdir(parents=True, exist_ok=True)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    layer_path = layout / "layer.tar.partial"
    with tarfile.open(layer_path, "w", format=tarfile.PAX_FORMAT) as layer:
        for entry in sorted(rootfs.iterdir()):
            layer.add(entry, arcname=entry.name, filter=_reset_owner)
    layer_digest = _store_file(blobs, layer_path)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": process_args(listen or f"tcp://0.0.0.0:{DEFAULT_PORT}"),
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "inclavare.eaa.service_image"}],
    }
    config_digest, config_size = _store(blobs, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": (blobs / layer_digest[7:]).stat().st_size,
            }
        ],
    }
    manifest_digest, manifest_size = _store(blobs, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_text(json.dumps(index))
    return manifest_digest


def _reset_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _store(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def _store_file(blobs: Path, path: Path) -> str:
    with open(path, "rb") as stream:
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
    path.replace(blobs / digest)
    return f"sha256:{digest}"


if __name__ == "__main__":  # pragma: no cover - a manual check of the file list
    image = build_rootfs(Path(sys.argv[1]))
    print(f"{image.files} files, {image.size / 1e6:.1f} MB in {image.rootfs}")
