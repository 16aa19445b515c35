"""inclavare.oci.image: layouts, blob checks, the layered file system, unpacking, writing."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inclavare.oci.image import (
    ImageError,
    ImageFileSystem,
    Layout,
    build_layer,
    parse_reference,
    unpack_to_bundle,
    write_layout,
)
from tests.unit.oci.layouts import (
    Entry,
    busybox_layout,
    directory,
    file,
    hardlink,
    make_layout,
    opaque,
    symlink,
    tar_layer,
    whiteout,
)

BUSYBOX = Path("/bin/busybox")


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not BUSYBOX.exists():
        pytest.skip("busybox-static is not installed")
    return busybox_layout(tmp_path_factory.mktemp("image"))


def filesystem_of(tmp_path: Path, *layers: list[Entry], compress: bool = False) -> ImageFileSystem:
    layout = tmp_path / f"layout-{len(list(tmp_path.iterdir()))}"
    make_layout(layout, layers, compress=compress)
    return Layout.open(layout).image().filesystem()


# --- the layout -----------------------------------------------------------------------------


def test_busybox_image_is_read_by_tag_and_by_default(busybox: Path) -> None:
    layout = Layout.open(busybox)
    assert layout.tags() == ["1"]
    image = layout.image("1")
    assert image.runtime_config["Cmd"] == ["sh"]
    assert layout.image().descriptor == image.descriptor
    with image.filesystem() as filesystem:
        assert filesystem.resolve("/bin/sh") == "/bin/busybox"
        assert filesystem.read_file("/bin/sh") == BUSYBOX.read_bytes()
        assert (
            filesystem.sha256("/usr/../bin/./ls") == hashlib.sha256(BUSYBOX.read_bytes()).digest()
        )
        assert filesystem.files_below("/etc") == ["/etc/group", "/etc/passwd"]
        assert filesystem.kind("/bin/sh") == "symlink"
        assert filesystem.kind("/tmp") == "dir"
        assert filesystem.kind("/nothing") is None


def test_unknown_tag_lists_the_known_ones(busybox: Path) -> None:
    with pytest.raises(ImageError, match=r"no image tagged 'v2' in .* \(tags: 1\)"):
        Layout.open(busybox).image("v2")


def test_not_a_layout(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is not an OCI image layout"):
        Layout.open(tmp_path)


def test_reference_splits_the_tag(tmp_path: Path) -> None:
    assert parse_reference("images/app:v1") == ("images/app", "v1")
    assert parse_reference("images/app") == ("images/app", None)
    odd = tmp_path / "a:b"
    odd.mkdir()
    assert parse_reference(str(odd)) == (str(odd), None)


def _blob_of(layout: Path, media_type: str) -> Path:
    manifest_digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest[7:]).read_text())
    descriptor = manifest["config"] if media_type == "config" else manifest["layers"][0]
    digest: str = descriptor["digest"]
    return layout / "blobs" / "sha256" / digest[7:]


@pytest.mark.parametrize("what", ["config", "layer"])
def test_a_tampered_blob_is_refused_naming_it(tmp_path: Path, what: str) -> None:
    layout = tmp_path / "layout"
    make_layout(layout, [[file("etc/motd", "hello\n")]])
    blob = _blob_of(layout, what)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=f"blob sha256:{blob.name} does not match its digest"):
        Layout.open(layout).image().filesystem().close()


def test_a_blob_of_the_wrong_size_or_missing_is_refused(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    make_layout(layout, [[file("etc/motd", "hello\n")]])
    blob = _blob_of(layout, "layer")
    blob.write_bytes(blob.read_bytes() + b"\0" * 512)
    with pytest.raises(ImageError, match=f"blob sha256:{blob.name} is .* its descriptor says"):
        Layout.open(layout).image().filesystem().close()
    blob.unlink()
    with pytest.raises(ImageError, match=f"blob sha256:{blob.name} is missing"):
        Layout.open(layout).image().filesystem().close()


def test_a_layer_that_is_not_its_diff_id_is_refused(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    make_layout(layout, [[file("a", "1")]], compress=True)
    config_blob = _blob_of(layout, "config")
    config = json.loads(config_blob.read_text())
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    # the config changes, so its descriptor is rewritten to keep the blobs consistent
    new_config = json.dumps(config).encode()
    digest = hashlib.sha256(new_config).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(new_config)
    index = json.loads((layout / "index.json").read_text())
    manifest_path = layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    manifest = json.loads(manifest_path.read_text())
    manifest["config"].update(digest="sha256:" + digest, size=len(new_config))
    manifest_bytes = json.dumps(manifest).encode()
    manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
    (layout / "blobs" / "sha256" / manifest_digest).write_bytes(manifest_bytes)
    index["manifests"][0].update(digest="sha256:" + manifest_digest, size=len(manifest_bytes))
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match="does not match its diff_id sha256:0000"):
        Layout.open(layout).image().filesystem().close()


def test_nested_index_and_second_tag(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    make_layout(layout, [[file("which", "first")]], tag="one")
    make_layout(layout, [[file("which", "second")]], tag="two")
    index = json.loads((layout / "index.json").read_text())
    nested = json.dumps({"schemaVersion": 2, "manifests": [index["manifests"][1]]}).encode()
    digest = hashlib.sha256(nested).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(nested)
    index["manifests"][1] = {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": "sha256:" + digest,
        "size": len(nested),
        "annotations": {"org.opencontainers.image.ref.name": "two"},
    }
    (layout / "index.json").write_text(json.dumps(index))
    for tag, expected in (("one", b"first"), ("two", b"second"), (None, b"first")):
        with Layout.open(layout).image(tag).filesystem() as filesystem:
            assert filesystem.read_file("/which") == expected


# --- layers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_whiteouts_opaque_directories_and_hard_links(tmp_path: Path, compress: bool) -> None:
    lower = [
        directory("app"),
        file("app/old", "old"),
        file("app/keep", "keep"),
        directory("data"),
        file("data/x", "x"),
        file("data/y", "y"),
        file("bin/tool", "tool"),
    ]
    upper = [
        whiteout("app/old"),
        opaque("data"),
        file("data/z", "z"),
        hardlink("bin/alias", "bin/tool"),
        symlink("bin/soft", "tool"),
    ]
    with filesystem_of(tmp_path, lower, upper, compress=compress) as filesystem:
        assert filesystem.names("/app") == ["keep"]
        assert filesystem.names("/data") == ["z"]
        assert filesystem.read_file("/bin/alias") == b"tool"
        assert filesystem.kind("/bin/alias") == "file"
        assert filesystem.read_file("/bin/soft") == b"tool"
        assert filesystem.files_below("/") == [
            "/app/keep",
            "/bin/alias",
            "/bin/tool",
            "/data/z",
        ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (file("../evil", "x"), "climbs out of the root"),
        (file("/etc/evil", "x"), "has an absolute name"),
        (hardlink("bin/h", "../../etc/shadow"), "climbs out of the root"),
        (hardlink("bin/h", "nothing"), "which is not a file of the image"),
    ],
)
def test_names_outside_the_root_are_refused(tmp_path: Path, entry: Entry, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        filesystem_of(tmp_path, [directory("bin"), entry]).close()


def test_links_resolve_inside_the_image(tmp_path: Path) -> None:
    layer = [
        file("etc/passwd", "root"),
        symlink("app/escape", "../../../../etc/passwd"),
        symlink("app/abs", "/etc/passwd"),
        symlink("loop", "loop"),
    ]
    with filesystem_of(tmp_path, layer) as filesystem:
        assert filesystem.resolve("/app/escape") == "/etc/passwd"
        assert filesystem.read_file("/app/abs") == b"root"
        with pytest.raises(ImageError, match="too many symbolic links resolving /loop"):
            filesystem.resolve("/loop")
        with pytest.raises(ImageError, match="/app is not a regular file"):
            filesystem.read_file("/app")


NAMES = st.sampled_from(["a", "b", "c"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
OPERATIONS = st.one_of(
    st.tuples(st.just("file"), PATHS, st.binary(max_size=8)),
    st.tuples(st.just("dir"), PATHS, st.just(b"")),
    st.tuples(st.just("symlink"), PATHS, st.sampled_from([b"a", b"../b", b"/c/a"])),
    st.tuples(st.just("whiteout"), PATHS, st.just(b"")),
    st.tuples(st.just("opaque"), st.one_of(st.just(""), PATHS), st.just(b"")),
)
LAYERS = st.lists(st.lists(OPERATIONS, max_size=8), min_size=1, max_size=4)


def _model(layers: list[list[tuple[str, str, bytes]]]) -> dict[str, tuple[str, bytes]]:
    """What an overlay of the layers shows, path -> (kind, content or link target)."""
    state: dict[str, tuple[str, bytes]] = {}

    def remove_below(path: str) -> None:
        for key in [key for key in state if key.startswith(path + "/") or not path]:
            del state[key]

    for layer in layers:
        for kind, path, _ in layer:
            if kind == "whiteout" and path in state:
                del state[path]
                remove_below(path)
            elif kind == "opaque" and (not path or state.get(path, ("",))[0] == "dir"):
                remove_below(path)
        for kind, path, data in layer:
            if kind in ("whiteout", "opaque"):
                continue
            parts = path.split("/")
            for depth in range(1, len(parts)):
                ancestor = "/".join(parts[:depth])
                if state.get(ancestor, ("",))[0] != "dir":
                    state[ancestor] = ("dir", b"")
            if kind == "dir" and state.get(path, ("",))[0] == "dir":
                continue
            state.pop(path, None)
            remove_below(path)
            state[path] = (kind, data)
    return state


def _entries(layer: list[tuple[str, str, bytes]]) -> list[Entry]:
    entries = []
    for kind, path, data in layer:
        if kind == "file":
            entries.append(file(path, data))
        elif kind == "dir":
            entries.append(directory(path))
        elif kind == "symlink":
            entries.append(symlink(path, data.decode()))
        elif kind == "whiteout":
            entries.append(whiteout(path))
        else:
            entries.append(file(f"{path}/.wh..wh..opq" if path else ".wh..wh..opq", b""))
    return entries


def _on_disk(root: Path) -> dict[str, tuple[str, bytes]]:
    found: dict[str, tuple[str, bytes]] = {}
    for current, directories, files in os.walk(root):
        for name in directories + files:
            host = Path(current) / name
            path = str(host.relative_to(root))
            if host.is_symlink():
                found[path] = ("symlink", os.readlink(host).encode())
            elif host.is_dir():
                found[path] = ("dir", b"")
            else:
                found[path] = ("file", host.read_bytes())
    return found


@settings(max_examples=150, deadline=None)
@given(LAYERS)
def test_layers_match_an_overlay_model_and_unpack_identically(
    layers: list[list[tuple[str, str, bytes]]],
) -> None:
    from inclavare.oci.image import extract

    expected = _model(layers)
    with tempfile.TemporaryDirectory() as scratch:
        layout = Path(scratch) / "layout"
        make_layout(layout, [_entries(layer) for layer in layers])
        with Layout.open(layout).image().filesystem() as filesystem:
            seen: dict[str, tuple[str, bytes]] = {}
            for path, node in filesystem.walk():
                if path == "/":
                    continue
                if node.kind == "file":
                    seen[path[1:]] = ("file", filesystem.read_file(path))
                elif node.kind == "symlink":
                    seen[path[1:]] = ("symlink", node.target.encode())
                else:
                    seen[path[1:]] = (node.kind, b"")
            assert seen == expected
            rootfs = Path(scratch) / "rootfs"
            rootfs.mkdir()
            extract(filesystem, rootfs)
            assert _on_disk(rootfs) == expected


TARGETS = st.sampled_from(["a", "../b", "/c", "a/b", ".", "..", "/a/../c", "b/c", "/", "x"])


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(PATHS, st.one_of(st.none(), TARGETS), max_size=8),
    st.lists(PATHS, min_size=1, max_size=5),
)
def test_links_resolve_as_in_a_root_file_system_on_the_host(
    tree: dict[str, str | None], queries: list[str]
) -> None:
    from inclavare.tee.sim.files import TrustedFileError, resolve_in_root

    entries: list[Entry] = []
    for path in sorted(tree):
        target = tree[path]
        entries.append(file(path, "f") if target is None else symlink(path, target))
    with tempfile.TemporaryDirectory() as scratch:
        layout = Path(scratch) / "layout"
        make_layout(layout, [entries])
        rootfs = Path(scratch) / "rootfs"
        rootfs.mkdir()
        with Layout.open(layout).image().filesystem() as filesystem:
            from inclavare.oci.image import extract

            extract(filesystem, rootfs)
            for query in queries:
                try:
                    on_host = "/" + str(resolve_in_root(rootfs, "/" + query).relative_to(rootfs))
                except TrustedFileError:
                    on_host = "error"
                try:
                    in_image = filesystem.resolve("/" + query)
                except ImageError:
                    in_image = "error"
                assert in_image == (on_host if on_host != "/." else "/")


# --- unpacking and writing ------------------------------------------------------------------


def test_unpack_busybox_to_a_bundle(busybox: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    config = unpack_to_bundle(busybox, "1", bundle)
    assert json.loads((bundle / "config.json").read_text()) == config
    assert config["process"]["args"] == ["sh"]
    assert config["process"]["cwd"] == "/"
    assert (
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        in (config["process"]["env"])
    )
    assert (bundle / "rootfs" / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()
    assert os.readlink(bundle / "rootfs" / "bin" / "sh") == "busybox"
    assert (bundle / "rootfs" / "tmp").stat().st_mode & 0o7777 == 0o1777
    with pytest.raises(ImageError, match="is not empty"):
        unpack_to_bundle(busybox, "1", bundle)


def test_unpack_applies_the_image_config(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    make_layout(
        layout,
        [[file("etc/passwd", "app:x:1000:1001::/:/bin/sh\n"), file("etc/group", "grp:x:7:\n")]],
        config={
            "Entrypoint": ["/app/run"],
            "Cmd": ["--port", "80"],
            "Env": ["PATH=/app", "MODE=prod"],
            "WorkingDir": "/srv",
            "User": "app:grp",
        },
    )
    config = unpack_to_bundle(layout, "latest", tmp_path / "bundle")
    process = config["process"]
    assert process["args"] == ["/app/run", "--port", "80"]
    assert process["env"] == ["PATH=/app", "TERM=xterm", "MODE=prod"]
    assert process["cwd"] == "/srv"
    assert process["user"] == {"uid": 1000, "gid": 7}


def test_unpack_of_an_image_without_a_program_is_refused(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    make_layout(layout, [[file("a", "1")]], config={})
    with pytest.raises(ImageError, match="has no program to run"):
        unpack_to_bundle(layout, None, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()  # nothing is left behind
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="has no program to run"):
        unpack_to_bundle(layout, None, tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []


def test_unpack_never_writes_through_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    layout = tmp_path / "layout"
    make_layout(
        layout,
        [[symlink("lnk", str(outside))], [file("lnk/evil", "x"), file("bin/sh", "sh")]],
    )
    unpack_to_bundle(layout, None, tmp_path / "bundle")
    assert list(outside.iterdir()) == []
    assert (tmp_path / "bundle" / "rootfs" / "lnk" / "evil").read_text() == "x"


def test_write_layout_adds_a_layer_and_env(busybox: Path, tmp_path: Path) -> None:
    base = Layout.open(busybox).image("1")
    layer = build_layer({"/.inclavare/enclave.sig": b"signature"})
    assert layer == build_layer({"/.inclavare/enclave.sig": b"signature"})  # reproducible
    target = tmp_path / "derived"
    descriptor = write_layout(base, target, "enclave", layer, ["ENCLAVE_TYPE=sim"], "test")
    image = Layout.open(target).image("enclave")
    assert image.descriptor == descriptor
    assert image.runtime_config["Env"][-1] == "ENCLAVE_TYPE=sim"
    assert image.layers[:-1] == tuple(
        layer_descriptor for layer_descriptor in base.layers
    )  # shared
    assert os.path.samefile(
        target / "blobs" / "sha256" / base.layers[0].hex,
        busybox / "blobs" / "sha256" / base.layers[0].hex,
    )
    with image.filesystem() as filesystem:
        assert filesystem.read_file("/.inclavare/enclave.sig") == b"signature"
        assert filesystem.read_file("/bin/sh") == BUSYBOX.read_bytes()
    # into the same layout, under another tag: both images remain
    write_layout(base, busybox, "enclave", layer, ["ENCLAVE_TYPE=sim"])
    assert sorted(Layout.open(busybox).tags()) == ["1", "enclave"]


def test_gzip_layer_that_is_not_gzip(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    make_layout(layout, [[file("a", "1")]], compress=True)
    blob = _blob_of(layout, "layer")
    bad = gzip.compress(tar_layer([file("a", "1")]))[:-8]
    blob.write_bytes(bad)
    # re-point the manifest at the broken blob's digest and size so only gzip fails
    index = json.loads((layout / "index.json").read_text())
    manifest_path = layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    manifest = json.loads(manifest_path.read_text())
    digest = hashlib.sha256(bad).hexdigest()
    blob.rename(blob.with_name(digest))
    manifest["layers"][0].update(digest="sha256:" + digest, size=len(bad))
    manifest_bytes = json.dumps(manifest).encode()
    manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
    (layout / "blobs" / "sha256" / manifest_digest).write_bytes(manifest_bytes)
    index["manifests"][0].update(digest="sha256:" + manifest_digest, size=len(manifest_bytes))
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match="is not valid gzip"):
        Layout.open(layout).image().filesystem().close()


# --- arbitrary input fails cleanly ----------------------------------------------------------


def _layout_with_layer(scratch: Path, layer: bytes) -> Path:
    from tests.unit.oci.layouts import write_blob

    layout = scratch / "layout"
    make_layout(layout, [[file("a", "1")]])
    config = json.dumps({"config": {"Cmd": ["a"]}, "rootfs": {"type": "layers"}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"digest": write_blob(layout, config), "size": len(config)},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": write_blob(layout, layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    entry = {"digest": write_blob(layout, manifest), "size": len(manifest)}
    (layout / "index.json").write_text(json.dumps({"manifests": [entry]}))
    return layout


VALID_LAYER = tar_layer(
    [directory("d"), file("d/f", "data"), symlink("d/l", "f"), hardlink("d/h", "d/f")]
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.tuples(st.integers(0, len(VALID_LAYER) - 1), st.integers(0, 255)).map(
            lambda change: (
                VALID_LAYER[: change[0]] + bytes([change[1]]) + VALID_LAYER[change[0] + 1 :]
            )
        ),
    )
)
def test_arbitrary_layers_fail_cleanly(layer: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        layout = _layout_with_layer(Path(scratch), layer)
        try:
            with Layout.open(layout).image().filesystem() as filesystem:
                for path, node in filesystem.walk():
                    if node.kind == "file":
                        filesystem.read_file(path)
        except ImageError:
            pass


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["manifests", "digest", "size", "mediaType", "annotations", "layers"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_arbitrary_index_documents_fail_cleanly(document: object) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        layout = Path(scratch)
        (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        (layout / "index.json").write_text(json.dumps(document))
        try:
            Layout.open(layout).image()
        except ImageError:
            pass
