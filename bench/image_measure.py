"""Benchmark: measuring an OCI image from its layers against extracting it with GNU tar and
measuring the extracted tree, in the same run.

`shelter mrverify --image` and `enclave-sign convert-image` read an image's file system from
its layers without extracting it. The peer is what a tool that extracts first would do:
`tar -xzf` of the same layers into a temporary directory, then the same measurement of the
directory. Both produce the same MRENCLAVE (checked). The best of several rounds is kept.

    python bench/image_measure.py [--rounds N]

The image has two gzip layers: one 32 MiB file (a runtime or model), 400 files of 64 KiB and
2000 files of 2 KiB in the first; the second replaces 100 of the small files and deletes 100
others (whiteouts), 59 MiB of content in all.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from inclavare.oci.image import Layout  # noqa: E402
from inclavare.tee.sim.files import measure  # noqa: E402
from inclavare.tee.sim.measurement import Manifest, RuntimeIdentity  # noqa: E402

MIB = 1024 * 1024
RUNTIME = RuntimeIdentity("builtin:native", "1")


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def _layer(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            _add(archive, name, data)
    return buffer.getvalue()


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def generate_image(layout: Path) -> list[Path]:
    """Write the image; returns its layer blobs, lowest first."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    lower = {"opt/model.bin": os.urandom(32 * MIB)}
    lower.update({f"usr/lib/pkg{i % 20}/m{i}.so": os.urandom(64 * 1024) for i in range(400)})
    lower.update({f"app/dir{i % 50}/s{i}.py": os.urandom(2048) for i in range(2000)})
    upper = {f"app/dir{i % 50}/s{i}.py": os.urandom(2048) for i in range(100)}
    upper.update({f"app/dir{i % 50}/.wh.s{i}.py": b"" for i in range(100, 200)})
    raw = [_layer(lower), _layer(upper)]
    layers = []
    for data in raw:
        compressed = gzip.compress(data, compresslevel=1, mtime=0)
        media_type = "application/vnd.oci.image.layer.v1.tar+gzip"
        layers.append({"mediaType": media_type, **_blob(layout, compressed)})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/opt/model.bin"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(data).hexdigest() for data in raw],
            },
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                **_blob(layout, config),
            },
            "layers": layers,
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", **_blob(layout, manifest)}
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return [layout / "blobs" / "sha256" / str(layer["digest"])[7:] for layer in layers]


def best_time(operation: Callable[[], object], rounds: int) -> float:
    operation()  # warm the page cache
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        operation()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per way (best kept)")
    args = parser.parse_args()
    if shutil.which("tar") is None:
        print("bench/image_measure: GNU tar is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="image-measure-") as scratch:
        layout = Path(scratch) / "image"
        blobs = generate_image(layout)
        ours: list[Manifest] = []
        theirs: list[Manifest] = []

        def from_layers() -> None:
            with Layout.open(layout).image().filesystem() as filesystem:
                ours.append(measure(filesystem, RUNTIME, ["/"]))

        def extract_then_measure() -> None:
            root = Path(scratch) / "rootfs"
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            for blob in blobs:
                subprocess.run(["tar", "-xzf", str(blob), "-C", str(root)], check=True)
            # tar does not apply whiteouts: remove them and what they hide, as an overlay would
            for marker in list(root.rglob(".wh.*")):
                hidden = marker.with_name(marker.name[4:])
                hidden.unlink(missing_ok=True)
                marker.unlink()
            theirs.append(measure(root, RUNTIME, ["/"]))

        layers_time = best_time(from_layers, args.rounds)
        extract_time = best_time(extract_then_measure, args.rounds)
    if ours[-1].mr_enclave != theirs[-1].mr_enclave:
        print("bench/image_measure: the two ways disagree on MRENCLAVE", file=sys.stderr)
        return 1
    print(f"trusted files: {len(ours[-1].files)}")
    print(f"from the layers (no extraction):    {layers_time * 1000:8.1f} ms")
    print(f"tar -xzf, then measure the tree:    {extract_time * 1000:8.1f} ms")
    print(f"ratio extract-and-measure / from-layers time: {extract_time / layers_time:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
