"""A container image built locally from busybox-static, with no registry.

The archive is both an OCI image layout (index.json, oci-layout, blobs/sha256/...), which
`ctr images import` and `podman load` read, and a Docker archive (manifest.json), which
`docker load` reads. The layer and the config are the same blobs for both.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import time
from pathlib import Path

BUSYBOX = "/bin/busybox"


def build_converted_archive(directory: Path) -> Path:
    """The busybox image of tests/unit/oci converted by `enclave-sign convert-image` into a
    signed sim enclave image (tag enclave, /etc trusted) and a tampered copy (tag tampered: a
    layer on top changes /etc/passwd), as one OCI archive in directory; the conversion's
    measurements (`--json`) in directory/conversion.json."""
    import contextlib

    from inclavare.cli.enclave_sign import main as enclave_sign
    from inclavare.oci.image import Layout, build_layer, write_layout
    from tests.unit.oci.layouts import busybox_layout

    layout = busybox_layout(directory)
    key = directory / "signing.pem"
    assert enclave_sign(["genkey", str(key)]) == 0
    argv = ["convert-image", f"{layout}:1", f"{layout}:enclave", "--key", str(key)]
    with open(directory / "conversion.json", "w") as report, contextlib.redirect_stdout(report):
        assert enclave_sign([*argv, "--trusted", "/etc", "--json"]) == 0
    signed = Layout.open(layout).image("enclave")
    passwd = b"root:x:0:0:root:/root:/bin/sh\nintruder:x:0:0::/:/bin/sh\n"
    write_layout(signed, layout, "tampered", build_layer({"/etc/passwd": passwd}))
    archive = directory / "converted.tar"
    with tarfile.open(archive, "w") as output:
        for path in sorted(layout.rglob("*")):
            if path.is_file():
                output.add(path, str(path.relative_to(layout)))
    return archive


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    archive.addfile(info, io.BytesIO(data))


def _layer() -> bytes:
    """An uncompressed tar of the root filesystem: busybox and a symlink per applet."""
    buffer = io.BytesIO()
    applets = subprocess.run(
        [BUSYBOX, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for directory in ("bin", "etc", "tmp", "root", "home", "home/user", "proc", "sys", "dev"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            layer.addfile(info)
        with open(BUSYBOX, "rb") as binary:
            _add_bytes(layer, "bin/busybox", binary.read(), 0o755)
        for applet in applets:
            if applet == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            layer.addfile(info)
        _add_bytes(
            layer,
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
        )
        _add_bytes(layer, "etc/group", b"root:x:0:\nuser:x:1000:\n")
    return buffer.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_busybox_archive(path: Path, reference: str = "localhost/rune-test/busybox:1") -> str:
    """Write the image archive to path; returns the image's reference."""
    return _write_archive(path, reference, _layer(), {"Cmd": ["sh"], "WorkingDir": "/"})


def build_pause_archive(path: Path, program: Path, reference: str) -> str:
    """Write an image archive whose only file is the static `program` at /pause, its
    entrypoint (a pod sandbox's image); returns the image's reference."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        _add_bytes(layer, "pause", program.read_bytes(), 0o755)
    return _write_archive(path, reference, buffer.getvalue(), {"Entrypoint": ["/pause"]})


def _write_archive(path: Path, reference: str, layer: bytes, settings: dict[str, object]) -> str:
    layer_digest = _digest(layer)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                **settings,
            },
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created_by": "tests/e2e/images.py"}],
        }
    ).encode()
    config_digest = _digest(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    manifest_digest = _digest(manifest)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": reference,
                        "org.opencontainers.image.ref.name": reference.rsplit(":", 1)[1],
                    },
                }
            ],
        }
    ).encode()
    blob = "blobs/sha256/"
    docker_manifest = json.dumps(
        [
            {
                "Config": blob + config_digest[7:],
                "RepoTags": [reference],
                "Layers": [blob + layer_digest[7:]],
            }
        ]
    ).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        _add_bytes(archive, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add_bytes(archive, "index.json", index)
        _add_bytes(archive, "manifest.json", docker_manifest)
        for data, digest in (
            (layer, layer_digest),
            (config, config_digest),
            (manifest, manifest_digest),
        ):
            _add_bytes(archive, blob + digest[7:], data)
    return reference
