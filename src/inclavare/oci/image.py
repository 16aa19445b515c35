"""OCI image layouts: read an image, see its file system, unpack it, write a derived image.

An image layout is a directory with `oci-layout`, `index.json` and `blobs/sha256/`. An
image is chosen by its tag (the `org.opencontainers.image.ref.name` annotation of an
index entry; without a tag, the first entry); an entry may be a nested index, in which case
the manifest for this machine's platform (or the first) is taken. Every blob is checked
against its descriptor's size and SHA-256 before it is used, and every layer against the
config's `rootfs.diff_ids`: a mismatch is a one-line error naming the blob.

The file system an image describes is computed from its layers (tar, or gzip-compressed
tar) in memory, as an overlay would show it: a `.wh.NAME` entry deletes NAME from the lower
layers, a `.wh..wh..opq` entry hides everything the lower layers had in its directory, hard
links share their target's content, and symbolic links stay links. Nothing is extracted and
no privilege is needed; file contents are read from the layers when asked for. A member
whose name is absolute or climbs out with `..`, or a hard link to such a name, makes the
layer invalid.

Paths inside the image resolve symbolic links the way a container sees them: an absolute
target starts at the image's root and `..` stops there (as `inclavare.tee.sim.files`
resolves them in a root file system on the host).

Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from inclavare.errors import InclavareError
from inclavare.oci import paths

LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = "1.0.0"
INDEX_FILE = "index.json"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
INDEX_TYPES = (MEDIA_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (MEDIA_MANIFEST, DOCKER_MANIFEST)
# Layer media type -> compressed with gzip?
LAYER_TYPES = {
    MEDIA_LAYER: False,
    MEDIA_LAYER_GZIP: True,
    DOCKER_LAYER: False,
    DOCKER_LAYER_GZIP: True,
    "application/vnd.oci.image.layer.nondistributable.v1.tar": False,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": True,
}
# Index, manifest and config blobs are JSON documents of modest size.
MAX_DOCUMENT = 4 << 20
MAX_NESTING = 4
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
CHUNK = 1 << 20


class ImageError(InclavareError):
    """An image layout, one of its blobs or a layer is unusable."""


# --- descriptors and the layout -----------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and its size."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Mapping[str, Any] | None = None

    @classmethod
    def parse(cls, document: Any, where: str) -> Descriptor:
        if not isinstance(document, dict):
            raise ImageError(f"{where}: a descriptor must be a JSON object")
        media_type = document.get("mediaType", "")
        digest = document.get("digest")
        size = document.get("size")
        annotations = document.get("annotations") or {}
        descriptor_platform = document.get("platform")
        if not isinstance(media_type, str):
            raise ImageError(f"{where}: mediaType must be a string")
        if not isinstance(digest, str):
            raise ImageError(f"{where}: the descriptor has no digest")
        check_digest(digest, where)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ImageError(f"{where}: the descriptor of {digest} has no valid size")
        if not isinstance(annotations, dict) or not all(
            isinstance(value, str) for value in annotations.values()
        ):
            raise ImageError(f"{where}: annotations must map strings to strings")
        if descriptor_platform is not None and not isinstance(descriptor_platform, dict):
            raise ImageError(f"{where}: platform must be a JSON object")
        return cls(media_type, digest, size, dict(annotations), descriptor_platform)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            document["annotations"] = dict(self.annotations)
        if self.platform is not None:
            document["platform"] = dict(self.platform)
        return document

    @property
    def hex(self) -> str:
        return self.digest[len("sha256:") :]


def check_digest(digest: str, where: str = "digest") -> str:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256":
        raise ImageError(f"{where}: digest {digest[:80]!r} is not sha256 (the only one supported)")
    if len(value) != 64 or any(char not in "0123456789abcdef" for char in value):
        raise ImageError(f"{where}: digest {digest[:80]!r} is not 64 lowercase hex digits")
    return digest


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_reference(text: str) -> tuple[str, str | None]:
    """`LAYOUT[:TAG]` as (layout directory, tag or None). A directory whose name contains a
    colon is taken whole when it exists."""
    if os.path.isdir(text) or ":" not in text:
        return text, None
    layout, _, tag = text.rpartition(":")
    if not layout or not tag or "/" in tag:
        return text, None
    return layout, tag


class Layout:
    """An OCI image layout directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Layout:
        layout = cls(path)
        marker = layout.path / LAYOUT_FILE
        try:
            document = json.loads(marker.read_bytes())
        except FileNotFoundError:
            raise ImageError(f"{path} is not an OCI image layout (no {LAYOUT_FILE})") from None
        except OSError as error:
            raise ImageError(f"cannot read {marker}: {error.strerror}") from None
        except ValueError:
            raise ImageError(f"{marker} is not valid JSON") from None
        if not isinstance(document, dict) or not isinstance(
            document.get("imageLayoutVersion"), str
        ):
            raise ImageError(f"{marker} has no imageLayoutVersion")
        return layout

    def blob_path(self, digest: str) -> Path:
        check_digest(digest)
        return self.path / "blobs" / "sha256" / digest[len("sha256:") :]

    def index(self) -> dict[str, Any]:
        path = self.path / INDEX_FILE
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ImageError(f"cannot read {path}: {error.strerror}") from None
        return _json_object(data, str(path))

    def read_blob(self, descriptor: Descriptor, limit: int = MAX_DOCUMENT) -> bytes:
        """The blob's bytes, checked against the descriptor's size and digest."""
        if descriptor.size > limit:
            raise ImageError(
                f"blob {descriptor.digest} is {descriptor.size} bytes, more than the "
                f"{limit} allowed for a {descriptor.media_type or 'document'}"
            )
        path = self.blob_path(descriptor.digest)
        try:
            with open(path, "rb") as stream:
                data = stream.read(descriptor.size + 1)
        except FileNotFoundError:
            raise ImageError(f"blob {descriptor.digest} is missing from {self.path}") from None
        except OSError as error:
            raise ImageError(f"cannot read blob {descriptor.digest}: {error.strerror}") from None
        _check_blob(descriptor, len(data), hashlib.sha256(data).hexdigest())
        return data

    def verify_blob(self, descriptor: Descriptor) -> Path:
        """The path of a (large) blob, after checking its size and digest."""
        path = self.blob_path(descriptor.digest)
        try:
            with open(path, "rb") as stream:
                size = os.fstat(stream.fileno()).st_size
                digest = hashlib.file_digest(stream, "sha256").hexdigest()
        except FileNotFoundError:
            raise ImageError(f"blob {descriptor.digest} is missing from {self.path}") from None
        except OSError as error:
            raise ImageError(f"cannot read blob {descriptor.digest}: {error.strerror}") from None
        _check_blob(descriptor, size, digest)
        return path

    def tags(self) -> list[str]:
        return [
            entry["annotations"][REF_NAME]
            for entry in self.index().get("manifests") or []
            if isinstance(entry, dict)
            and isinstance(entry.get("annotations"), dict)
            and isinstance(entry["annotations"].get(REF_NAME), str)
        ]

    def image(self, tag: str | None = None) -> Image:
        """The image tagged `tag` (default: the first one the index lists)."""
        entries = _manifests(self.index(), f"{self.path}/{INDEX_FILE}")
        if not entries:
            raise ImageError(f"{self.path}/{INDEX_FILE} lists no image")
        if tag is None:
            chosen = entries[0]
        else:
            matching = [
                entry
                for entry in entries
                if tag in (entry.annotations.get(REF_NAME), entry.annotations.get(CONTAINERD_NAME))
            ]
            if not matching:
                known = ", ".join(sorted(set(self.tags()))) or "none"
                raise ImageError(f"no image tagged {tag!r} in {self.path} (tags: {known})")
            chosen = matching[0]
        return self._image_at(chosen, tag, 0)

    def _image_at(self, descriptor: Descriptor, tag: str | None, depth: int) -> Image:
        if descriptor.media_type in INDEX_TYPES:
            if depth >= MAX_NESTING:
                raise ImageError(f"index {descriptor.digest} nests more than {MAX_NESTING} deep")
            nested = _manifests(
                _json_object(self.read_blob(descriptor), descriptor.digest), descriptor.digest
            )
            if not nested:
                raise ImageError(f"index {descriptor.digest} lists no manifest")
            return self._image_at(_for_this_platform(nested), tag, depth + 1)
        if descriptor.media_type and descriptor.media_type not in MANIFEST_TYPES:
            raise ImageError(
                f"{descriptor.digest} is a {descriptor.media_type}, not an image manifest"
            )
        manifest = _json_object(self.read_blob(descriptor), descriptor.digest)
        if manifest.get("mediaType") in INDEX_TYPES:
            return self._image_at(
                Descriptor(manifest["mediaType"], descriptor.digest, descriptor.size),
                tag,
                depth,
            )
        where = f"manifest {descriptor.digest}"
        config_descriptor = Descriptor.parse(manifest.get("config"), f"{where} config")
        layers_document = manifest.get("layers")
        if not isinstance(layers_document, list):
            raise ImageError(f"{where} has no layers list")
        layers = tuple(
            Descriptor.parse(layer, f"{where} layer {number}")
            for number, layer in enumerate(layers_document)
        )
        for layer in layers:
            if layer.media_type not in LAYER_TYPES:
                raise ImageError(
                    f"layer {layer.digest} has media type {layer.media_type!r}; supported: "
                    "tar and tar+gzip"
                )
        config = _json_object(self.read_blob(config_descriptor), config_descriptor.digest)
        return Image(self, descriptor, manifest, config_descriptor, config, layers, tag)


def _check_blob(descriptor: Descriptor, size: int, hex_digest: str) -> None:
    if size != descriptor.size:
        raise ImageError(
            f"blob {descriptor.digest} is {size} bytes, its descriptor says {descriptor.size}"
        )
    if "sha256:" + hex_digest != descriptor.digest:
        raise ImageError(
            f"blob {descriptor.digest} does not match its digest (its content is sha256:"
            f"{hex_digest})"
        )


def _json_object(data: bytes, where: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise ImageError(f"{where} is not valid JSON") from None
    if not isinstance(document, dict):
        raise ImageError(f"{where} is not a JSON object")
    return document


def _manifests(index: Mapping[str, Any], where: str) -> list[Descriptor]:
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise ImageError(f"{where} has no manifests list")
    return [Descriptor.parse(entry, f"{where} entry {n}") for n, entry in enumerate(entries)]


_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def _for_this_platform(entries: Sequence[Descriptor]) -> Descriptor:
    machine = platform.machine()
    architecture = _ARCHITECTURES.get(machine, machine)
    for entry in entries:
        if (
            entry.platform is not None
            and entry.platform.get("os") == "linux"
            and entry.platform.get("architecture") == architecture
        ):
            return entry
    return entries[0]


# --- images -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """One image of a layout: its manifest, its config and its layers (all checked)."""

    layout: Layout
    descriptor: Descriptor
    manifest: Mapping[str, Any]
    config_descriptor: Descriptor
    config: Mapping[str, Any]
    layers: tuple[Descriptor, ...]
    tag: str | None = None

    @property
    def name(self) -> str:
        return f"{self.layout.path}:{self.tag}" if self.tag else str(self.layout.path)

    @property
    def runtime_config(self) -> Mapping[str, Any]:
        """The image config's `config` object (Entrypoint, Cmd, Env, ...), possibly empty."""
        section = self.config.get("config")
        return section if isinstance(section, dict) else {}

    @property
    def diff_ids(self) -> list[str] | None:
        rootfs = self.config.get("rootfs")
        ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if isinstance(ids, list) and all(isinstance(item, str) for item in ids):
            return list(ids)
        return None

    def filesystem(self) -> ImageFileSystem:
        """The file system the image's layers describe (close it when done)."""
        diff_ids = self.diff_ids
        if diff_ids is not None and len(diff_ids) != len(self.layers):
            raise ImageError(
                f"image {self.descriptor.digest}: the config lists {len(diff_ids)} diff_ids "
                f"for {len(self.layers)} layers"
            )
        filesystem = ImageFileSystem()
        try:
            for number, layer in enumerate(self.layers):
                blob = self.layout.verify_blob(layer)
                expected = diff_ids[number] if diff_ids is not None else None
                filesystem.add_layer(_LayerData.open(blob, layer, expected), layer.digest)
        except BaseException:
            filesystem.close()
            raise
        return filesystem


class _LayerData:
    """The uncompressed tar of a layer: the blob itself, or an anonymous temporary file."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    @classmethod
    def open(cls, blob: Path, layer: Descriptor, diff_id: str | None) -> _LayerData:
        if not LAYER_TYPES[layer.media_type]:
            if diff_id is not None and diff_id != layer.digest:
                raise ImageError(f"layer {layer.digest} does not match its diff_id {diff_id}")
            return cls(open(blob, "rb"))  # kept open while the view lives
        # anonymous, gone when closed; kept open while the view lives
        uncompressed = tempfile.TemporaryFile()  # noqa: SIM115
        digest = hashlib.sha256()
        try:
            with gzip.open(blob, "rb") as source:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    uncompressed.write(chunk)
        except (OSError, EOFError, zlib.error) as error:
            uncompressed.close()
            raise ImageError(f"layer {layer.digest} is not valid gzip: {error}") from None
        if diff_id is not None and diff_id != "sha256:" + digest.hexdigest():
            uncompressed.close()
            raise ImageError(f"layer {layer.digest} does not match its diff_id {diff_id}")
        return cls(uncompressed)

    def read(self, offset: int, size: int) -> Iterator[bytes]:
        self.stream.seek(offset)
        left = size
        while left > 0:
            chunk = self.stream.read(min(left, CHUNK))
            if not chunk:
                raise ImageError("a layer is shorter than its tar headers say")
            left -= len(chunk)
            yield chunk

    def close(self) -> None:
        self.stream.close()


# --- the file system of an image --------------------------------------------------------------

FILE = "file"
DIRECTORY = "dir"
SYMLINK = "symlink"
OTHER = "other"  # device nodes and FIFOs


@dataclass(eq=False)
class Content:
    """Where a regular file's bytes are: one layer, an offset and a size. Hard links share
    one Content."""

    layer: int
    offset: int
    size: int


@dataclass(eq=False)
class Node:
    kind: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    target: str = ""  # of a symbolic link
    content: Content | None = None  # of a regular file
    tar_type: bytes = tarfile.DIRTYPE
    device: tuple[int, int] = (0, 0)
    children: dict[str, Node] = field(default_factory=dict)


def member_parts(name: str, layer: str) -> list[str]:
    """The path components of a tar member inside the root file system ([] for the root)."""
    if name.startswith("/"):
        raise ImageError(f"layer {layer}: member {name[:200]!r} has an absolute name")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"layer {layer}: member {name[:200]!r} climbs out of the root with '..'")
    if any("\0" in part for part in parts):
        raise ImageError(f"layer {layer}: member {name[:200]!r} has a NUL byte")
    return parts


class ImageFileSystem:
    """The final file system of an image's layers, read without extracting them."""

    def __init__(self) -> None:
        self.root = Node(DIRECTORY)
        self._layers: list[_LayerData] = []

    def __enter__(self) -> ImageFileSystem:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for layer in self._layers:
            layer.close()
        self._layers.clear()

    # -- building ------------------------------------------------------------------------------

    def add_layer(self, data: _LayerData, name: str) -> None:
        """Apply a layer on top of the ones already added."""
        number = len(self._layers)
        self._layers.append(data)
        data.stream.seek(0)
        try:
            with tarfile.open(fileobj=data.stream, mode="r:") as archive:
                members = archive.getmembers()
        except (tarfile.TarError, EOFError, OSError) as error:
            raise ImageError(f"layer {name} is not a valid tar archive: {error}") from None
        self.apply(members, number, name)

    def apply(self, members: Sequence[tarfile.TarInfo], layer: int, name: str) -> None:
        """Apply the members of one layer: its whiteouts hide what the lower layers have,
        then its entries are added in order."""
        entries: list[tuple[list[str], tarfile.TarInfo]] = []
        for member in members:
            parts = member_parts(member.name, name)
            base = parts[-1] if parts else ""
            if base == OPAQUE:
                directory = self._node(parts[:-1])
                if directory is not None and directory.kind == DIRECTORY:
                    directory.children.clear()
            elif base.startswith(WHITEOUT + WHITEOUT):
                continue  # other aufs metadata (.wh..wh..plnk and the like)
            elif base.startswith(WHITEOUT):
                parent = self._node(parts[:-1])
                if parent is not None and parent.kind == DIRECTORY:
                    parent.children.pop(base[len(WHITEOUT) :], None)
            else:
                entries.append((parts, member))
        for parts, member in entries:
            self._add(parts, member, layer, name)

    def _add(self, parts: list[str], member: tarfile.TarInfo, layer: int, name: str) -> None:
        if member.issparse():
            raise ImageError(f"layer {name}: member {member.name[:200]!r} is a sparse file")
        if member.isdir():
            node = Node(DIRECTORY)
        elif member.isreg():
            node = Node(FILE, content=Content(layer, member.offset_data, member.size))
        elif member.issym():
            node = Node(SYMLINK, target=member.linkname)
        elif member.islnk():
            target = self._node(member_parts(member.linkname, name))
            if target is None or target.kind == DIRECTORY:
                raise ImageError(
                    f"layer {name}: hard link {member.name[:200]!r} to "
                    f"{member.linkname[:200]!r}, which is not a file of the image"
                )
            node = copy.copy(target)  # shares the target's Content: one inode
        elif member.ischr() or member.isblk() or member.isfifo():
            node = Node(OTHER, device=(member.devmajor, member.devminor))
        else:
            raise ImageError(
                f"layer {name}: member {member.name[:200]!r} has unsupported type {member.type!r}"
            )
        if not member.islnk():
            node.tar_type = member.type
        node.mode = stat.S_IMODE(member.mode)
        node.uid, node.gid, node.mtime = member.uid, member.gid, int(member.mtime)
        if not parts:
            if node.kind != DIRECTORY:
                raise ImageError(f"layer {name}: the root must be a directory")
            node.children = self.root.children
            self.root = node
            return
        parent = self.root
        for part in parts[:-1]:
            child = parent.children.get(part)
            if child is None or child.kind != DIRECTORY:
                child = Node(DIRECTORY)
                parent.children[part] = child
            parent = child
        existing = parent.children.get(parts[-1])
        if node.kind == DIRECTORY and existing is not None and existing.kind == DIRECTORY:
            node.children = existing.children  # a directory entry merges with the lower one
        parent.children[parts[-1]] = node

    # -- reading -------------------------------------------------------------------------------

    def _node(self, parts: Sequence[str]) -> Node | None:
        node = self.root
        for part in parts:
            if node.kind != DIRECTORY:
                return None
            child = node.children.get(part)
            if child is None:
                return None
            node = child
        return node

    def lookup(self, path: str) -> Node | None:
        """The node at `path`, following no symbolic link."""
        return self._node([part for part in paths.normalise(path).split("/") if part])

    def resolve(self, path: str) -> str:
        """`path` with every symbolic link resolved inside the image."""

        def link_target(parts: list[str]) -> str | None:
            parent = self._node(parts[:-1])
            if parent is not None and parent.kind != DIRECTORY:
                raise ImageError(f"cannot examine {path}: Not a directory")
            node = self._node(parts)
            return node.target if node is not None and node.kind == SYMLINK else None

        try:
            return "/" + "/".join(paths.resolve(path, link_target))
        except paths.TooManyLinks as error:
            raise ImageError(str(error)) from None

    def kind(self, path: str) -> str | None:
        """FILE, DIRECTORY, SYMLINK, OTHER or None (absent), following no link."""
        node = self.lookup(path)
        return None if node is None else node.kind

    def names(self, directory: str) -> list[str]:
        """The names in a directory (following no link), sorted."""
        node = self.lookup(directory)
        if node is None or node.kind != DIRECTORY:
            raise ImageError(f"{directory} is not a directory of the image")
        return sorted(node.children)

    def chunks(self, path: str) -> Iterator[bytes]:
        """The content of the regular file at `path` (links resolved), in chunks."""
        resolved = self.resolve(path)
        node = self.lookup(resolved)
        if node is None:
            raise ImageError(f"{path} is not in the image")
        if node.kind != FILE or node.content is None:
            raise ImageError(f"{path} is not a regular file of the image")
        return self._read(node.content)

    def _read(self, content: Content) -> Iterator[bytes]:
        return self._layers[content.layer].read(content.offset, content.size)

    def read_file(self, path: str) -> bytes:
        return b"".join(self.chunks(path))

    def sha256(self, path: str, shown_as: str = "") -> bytes:
        digest = hashlib.sha256()
        for chunk in self.chunks(path):
            digest.update(chunk)
        return digest.digest()

    def files_below(self, directory: str) -> list[str]:
        """The regular files below `directory` (resolved), by their paths under it, sorted."""
        resolved = self.resolve(directory)
        found: list[str] = []
        self._walk_files(resolved.rstrip("/"), self.lookup(resolved), found)
        return found

    def _walk_files(self, prefix: str, node: Node | None, found: list[str]) -> None:
        if node is None or node.kind != DIRECTORY:
            return
        for name in sorted(node.children):
            child = node.children[name]
            if child.kind == FILE:
                found.append(f"{prefix}/{name}")
            elif child.kind == DIRECTORY:
                self._walk_files(f"{prefix}/{name}", child, found)

    def walk(self) -> Iterator[tuple[str, Node]]:
        """Every path and node, parents before their children, siblings sorted."""
        pending: list[tuple[str, Node]] = [("", self.root)]
        while pending:
            prefix, node = pending.pop()
            yield prefix or "/", node
            if node.kind == DIRECTORY:
                for name in sorted(node.children, reverse=True):
                    pending.append((f"{prefix}/{name}", node.children[name]))


# --- unpacking into a bundle ----------------------------------------------------------------


def unpack_to_bundle(
    layout: str | os.PathLike[str], tag: str | None, bundle_dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Extract the image into BUNDLE/rootfs and write BUNDLE/config.json; returns the config.

    The bundle directory must be absent or empty. The config is rune's default spec with the
    image's Entrypoint + Cmd, Env, WorkingDir and User, as containerd's `ctr run` makes it.
    """
    image = Layout.open(layout).image(tag)
    bundle = Path(bundle_dir)
    created = not bundle.exists()
    try:
        bundle.mkdir(parents=True, exist_ok=True)
        if any(bundle.iterdir()):
            raise ImageError(f"bundle directory {bundle} is not empty")
        rootfs = bundle / "rootfs"
        rootfs.mkdir(mode=0o755)
    except OSError as error:
        raise ImageError(f"cannot create the bundle {bundle}: {error.strerror}") from None
    try:
        with image.filesystem() as filesystem:
            config = bundle_config(image, filesystem)
            extract(filesystem, rootfs)
        _write_atomically(bundle / "config.json", json.dumps(config, indent=2).encode())
    except BaseException:
        # leave the directory as it was found: absent or empty
        shutil.rmtree(rootfs, ignore_errors=True)
        if created:
            shutil.rmtree(bundle, ignore_errors=True)
        raise
    return config


def extract(filesystem: ImageFileSystem, rootfs: Path) -> None:
    """Write the image's files below `rootfs` (an empty directory). Each name is created
    fresh (O_EXCL, O_NOFOLLOW) below directories made here, so nothing can be written
    outside `rootfs`, whatever the image's links point to."""
    privileged = os.geteuid() == 0
    written: dict[int, str] = {}  # id(Content) -> host path, to recreate hard links
    directories: list[tuple[str, Node]] = []
    for path, node in filesystem.walk():
        host = str(rootfs) + path if path != "/" else str(rootfs)
        try:
            if node.kind == DIRECTORY:
                if path != "/":
                    os.mkdir(host, 0o700)
                directories.append((host, node))
                continue
            if node.kind == FILE:
                assert node.content is not None
                first = written.get(id(node.content))
                if first is not None:
                    os.link(first, host, follow_symlinks=False)
                    continue
                written[id(node.content)] = host
                fd = os.open(
                    host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
                )
                with os.fdopen(fd, "wb") as stream:
                    for chunk in filesystem._read(node.content):
                        stream.write(chunk)
            elif node.kind == SYMLINK:
                os.symlink(node.target, host)
            elif node.tar_type == tarfile.FIFOTYPE:
                os.mkfifo(host, 0o600)
            elif privileged:
                kind = stat.S_IFCHR if node.tar_type == tarfile.CHRTYPE else stat.S_IFBLK
                os.mknod(host, kind | 0o600, os.makedev(*node.device))
            else:
                continue  # device nodes need privilege; rootless unpackers skip them too
            _set_metadata(host, node, privileged)
        except OSError as error:
            raise ImageError(f"cannot extract {path}: {error.strerror or error}") from None
    for host, node in reversed(directories):  # children first: a directory may be read-only
        try:
            _set_metadata(host, node, privileged)
        except OSError as error:
            raise ImageError(f"cannot extract {host}: {error.strerror}") from None


def _set_metadata(host: str, node: Node, privileged: bool) -> None:
    if privileged:
        os.lchown(host, node.uid, node.gid)
    if node.kind != SYMLINK:
        os.chmod(host, node.mode & 0o7777 if privileged else node.mode & 0o1777)
    os.utime(host, (node.mtime, node.mtime), follow_symlinks=False)


def bundle_config(image: Image, filesystem: ImageFileSystem) -> dict[str, Any]:
    """rune's default spec made to run the image, as containerd does with an image config."""
    from inclavare.oci.default_spec import default_spec

    settings = image.runtime_config
    spec = default_spec()
    process = spec["process"]
    process["terminal"] = False
    entrypoint = _strings(settings.get("Entrypoint"), "Entrypoint")
    command = _strings(settings.get("Cmd"), "Cmd")
    args = entrypoint + command
    if not args:
        raise ImageError(f"image {image.name} has no program to run (no Entrypoint or Cmd)")
    process["args"] = args
    process["env"] = merge_env(process["env"], _strings(settings.get("Env"), "Env"))
    working_dir = settings.get("WorkingDir")
    process["cwd"] = working_dir if isinstance(working_dir, str) and working_dir else "/"
    user = settings.get("User")
    if isinstance(user, str) and user:
        uid, gid = resolve_user(user, filesystem)
        process["user"] = {"uid": uid, "gid": gid}
    spec["root"]["readonly"] = False
    return spec


def _strings(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ImageError(f"the image config's {name} must be a list of strings")
    return list(value)


def merge_env(base: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """`base` with each KEY=VALUE of `overrides` replacing the same KEY, or appended."""
    merged = list(base)
    for entry in overrides:
        key = entry.split("=", 1)[0]
        for position, existing in enumerate(merged):
            if existing.split("=", 1)[0] == key:
                merged[position] = entry
                break
        else:
            merged.append(entry)
    return merged


def resolve_user(user: str, filesystem: ImageFileSystem) -> tuple[int, int]:
    """The uid and gid of the image config's User (`uid`, `uid:gid`, `name`, `name:group`),
    names looked up in the image's /etc/passwd and /etc/group."""
    name, _, group = user.partition(":")
    passwd = _table(filesystem, "/etc/passwd")
    if name.isdigit():
        uid = int(name)
        gid = next((int(row[3]) for row in passwd if row[2] == name and row[3].isdigit()), 0)
    else:
        row = next((row for row in passwd if row[0] == name), None)
        if row is None or not row[2].isdigit() or not row[3].isdigit():
            raise ImageError(f"the image's user {name!r} is not in its /etc/passwd")
        uid, gid = int(row[2]), int(row[3])
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = next((row for row in _table(filesystem, "/etc/group") if row[0] == group), None)
            if found is None or not found[2].isdigit():
                raise ImageError(f"the image's group {group!r} is not in its /etc/group")
            gid = int(found[2])
    return uid, gid


def _table(filesystem: ImageFileSystem, path: str) -> list[list[str]]:
    try:
        text = filesystem.read_file(path).decode("utf-8", "replace")
    except ImageError:
        return []
    return [line.split(":") + [""] * 4 for line in text.splitlines() if line and line[0] != "#"]


# --- writing a derived image ----------------------------------------------------------------


def build_layer(files: Mapping[str, bytes], mode: int = 0o644) -> bytes:
    """A reproducible uncompressed tar layer holding `files` (path inside the image ->
    content) and their parent directories: owner root, time 0."""
    buffer = io.BytesIO()
    directories: set[str] = set()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(files):
            parts = member_parts(path.lstrip("/"), "new layer")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in directories:
                    directories.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    archive.addfile(info)
            info = tarfile.TarInfo("/".join(parts))
            info.size = len(files[path])
            info.mode = mode
            archive.addfile(info, io.BytesIO(files[path]))
    return buffer.getvalue()


_OCI_LAYER_TYPES = {DOCKER_LAYER: MEDIA_LAYER, DOCKER_LAYER_GZIP: MEDIA_LAYER_GZIP}


def write_layout(
    base: Image,
    destination: str | os.PathLike[str],
    tag: str,
    layer: bytes,
    env: Sequence[str] = (),
    created_by: str = "",
) -> Descriptor:
    """Write to `destination` (a layout, created if absent) the image `base` plus the
    uncompressed tar `layer` on top, with the KEY=VALUE entries of `env` set in its config,
    tagged `tag`. The base's layers are shared (hard-linked, or copied across file systems);
    an existing entry with the same tag is replaced. Returns the new manifest's descriptor."""
    target = Layout(destination)
    blobs = target.path / "blobs" / "sha256"
    try:
        blobs.mkdir(parents=True, exist_ok=True)
        if not (target.path / LAYOUT_FILE).exists():
            _write_atomically(
                target.path / LAYOUT_FILE,
                json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode(),
            )
    except OSError as error:
        raise ImageError(
            f"cannot create the image layout {destination}: {error.strerror}"
        ) from None
    for descriptor in base.layers:
        _share_blob(base.layout, target, descriptor)

    config = copy.deepcopy(dict(base.config))
    settings = config.setdefault("config", {})
    if not isinstance(settings, dict):
        raise ImageError(f"image {base.name}: its config's 'config' is not an object")
    settings["Env"] = merge_env(_strings(settings.get("Env"), "Env"), env)
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    layer_digest = digest_of(layer)
    rootfs["diff_ids"] = [*(base.diff_ids or []), layer_digest]
    history = config.get("history")
    if isinstance(history, list):
        history.append({"created_by": created_by} if created_by else {})
    config_bytes = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    config_descriptor = Descriptor(MEDIA_CONFIG, digest_of(config_bytes), len(config_bytes))
    layer_descriptor = Descriptor(MEDIA_LAYER, layer_digest, len(layer))

    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_descriptor.to_json(),
        "layers": [
            Descriptor(
                _OCI_LAYER_TYPES.get(item.media_type, item.media_type), item.digest, item.size
            ).to_json()
            for item in base.layers
        ]
        + [layer_descriptor.to_json()],
    }
    if isinstance(base.manifest.get("annotations"), dict):
        manifest["annotations"] = dict(base.manifest["annotations"])
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    for data in (layer, config_bytes, manifest_bytes):
        _write_blob(target, data)

    descriptor = Descriptor(
        MEDIA_MANIFEST,
        digest_of(manifest_bytes),
        len(manifest_bytes),
        {REF_NAME: tag},
        base.descriptor.platform,
    )
    index_path = target.path / INDEX_FILE
    index: dict[str, Any] = (
        target.index() if index_path.exists() else {"schemaVersion": 2, "manifests": []}
    )
    entries = [
        entry
        for entry in index.get("manifests") or []
        if not (isinstance(entry, dict) and (entry.get("annotations") or {}).get(REF_NAME) == tag)
    ]
    index["manifests"] = [*entries, descriptor.to_json()]
    index.setdefault("schemaVersion", 2)
    _write_atomically(index_path, json.dumps(index, indent=2).encode())
    return descriptor


def _share_blob(source: Layout, target: Layout, descriptor: Descriptor) -> None:
    origin = source.verify_blob(descriptor)
    copy_path = target.blob_path(descriptor.digest)
    if copy_path.exists():
        if os.path.samefile(origin, copy_path):
            return
        target.verify_blob(descriptor)  # an existing blob must be the right one
        return
    try:
        os.link(origin, copy_path)
    except OSError:
        temporary = copy_path.with_name(f".{copy_path.name}.tmp")
        try:
            with open(origin, "rb") as reader, open(temporary, "wb") as writer:
                while chunk := reader.read(CHUNK):
                    writer.write(chunk)
            temporary.replace(copy_path)
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise ImageError(f"cannot copy blob {descriptor.digest}: {error.strerror}") from None
        target.verify_blob(descriptor)


def _write_blob(target: Layout, data: bytes) -> None:
    path = target.blob_path(digest_of(data))
    if not path.exists():
        _write_atomically(path, data)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        temporary.replace(path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise ImageError(f"cannot write {path}: {error.strerror}") from None
