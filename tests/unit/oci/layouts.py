"""Image layouts for tests, written here independently of inclavare.oci.image."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One tar member: a file (data), a directory, a symlink or a hard link (target)."""

    name: str
    kind: str = "file"  # file | dir | symlink | hardlink | fifo
    data: bytes = b""
    target: str = ""
    mode: int = 0o644


def file(name: str, data: bytes | str, mode: int = 0o644) -> Entry:
    return Entry(name, "file", data.encode() if isinstance(data, str) else data, mode=mode)


def directory(name: str) -> Entry:
    return Entry(name, "dir", mode=0o755)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, "symlink", target=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, "hardlink", target=target)


def whiteout(name: str) -> Entry:
    parent, _, base = name.rpartition("/")
    return file(f"{parent}/.wh.{base}" if parent else f".wh.{base}", b"")


def opaque(directory_name: str) -> Entry:
    return file(f"{directory_name}/.wh..wh..opq", b"")


def tar_layer(entries: Sequence[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mode = entry.mode
            info.mtime = 1_700_000_000
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif entry.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
            elif entry.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, entry.target
            elif entry.kind == "fifo":
                info.type = tarfile.FIFOTYPE
            if entry.kind == "file":
                info.size = len(entry.data)
                archive.addfile(info, io.BytesIO(entry.data))
            else:
                archive.addfile(info)
    return buffer.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_blob(layout: Path, data: bytes) -> str:
    digest = _digest(data)
    path = layout / "blobs" / "sha256" / digest[7:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def make_layout(
    layout: Path,
    layers: Sequence[Sequence[Entry]],
    config: dict[str, Any] | None = None,
    tag: str = "latest",
    compress: bool = False,
) -> str:
    """Write an image of `layers` to the layout (created or extended); returns the
    manifest's digest."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    layer_descriptors = []
    diff_ids = []
    for entries in layers:
        raw = tar_layer(entries)
        diff_ids.append(_digest(raw))
        blob = gzip.compress(raw, mtime=0) if compress else raw
        media_type = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
        layer_descriptors.append(
            {"mediaType": media_type, "digest": write_blob(layout, blob), "size": len(blob)}
        )
    config_document = {
        "architecture": "amd64",
        "os": "linux",
        "config": config if config is not None else {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_bytes = json.dumps(config_document).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": write_blob(layout, config_bytes),
                "size": len(config_bytes),
            },
            "layers": layer_descriptors,
        }
    ).encode()
    manifest_digest = write_blob(layout, manifest)
    index_path = layout / "index.json"
    index: dict[str, Any] = (
        json.loads(index_path.read_text())
        if index_path.exists()
        else {"schemaVersion": 2, "manifests": []}
    )
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    )
    index_path.write_text(json.dumps(index))
    return manifest_digest


def busybox_layout(directory: Path) -> Path:
    """The busybox image of the e2e tests (tests/e2e/images.py), as a layout directory."""
    from tests.e2e.images import build_busybox_archive

    archive = directory / "busybox.tar"
    build_busybox_archive(archive)
    layout = directory / "busybox"
    with tarfile.open(archive) as opened:
        for member in opened.getmembers():  # regular files with plain relative names only
            extracted = opened.extractfile(member)
            assert extracted is not None and ".." not in member.name.split("/")
            target = layout / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(extracted.read())
    return layout
