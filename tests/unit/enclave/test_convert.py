"""Conversion of bundles and images into signed sim enclaves, and `enclave-sign convert*`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from inclavare.cli.enclave_sign import main as enclave_sign
from inclavare.enclave.convert import ConversionError, convert_bundle, convert_image
from inclavare.errors import InclavareError
from inclavare.oci.image import Layout, unpack_to_bundle
from inclavare.tee.sim.errors import LaunchRefused
from inclavare.tee.sim.files import SIGNATURE_PATH, LaunchRequest, launch_enclave, measure
from inclavare.tee.sim.measurement import RuntimeIdentity
from inclavare.tee.sim.sigstruct import key_signer
from tests.unit.oci.layouts import directory, file, make_layout, symlink

NATIVE = RuntimeIdentity("builtin:native", "1")
PROGRAM = b"\x7fELF a program"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    (root / "rootfs" / "bin").mkdir(parents=True)
    (root / "rootfs" / "bin" / "busybox").write_bytes(PROGRAM)
    os.symlink("busybox", root / "rootfs" / "bin" / "sh")
    (root / "rootfs" / "etc").mkdir()
    (root / "rootfs" / "etc" / "motd").write_text("hello\n")
    config = {
        "ociVersion": "1.1.0",
        "root": {"path": "rootfs"},
        "process": {"args": ["sh", "-c", "true"], "env": ["PATH=/bin"], "cwd": "/"},
    }
    (root / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture
def key_file(tmp_path: Path, signing_key: bytes) -> Path:
    path = tmp_path / "signing.pem"
    path.write_bytes(signing_key)
    return path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    layout = tmp_path / "image"
    make_layout(
        layout,
        [
            [directory("bin"), file("bin/busybox", PROGRAM, 0o755), symlink("bin/sh", "busybox")],
            [file("etc/motd", "hello\n"), file("app/run.sh", "#!/bin/sh\necho hi\n", 0o755)],
        ],
        config={"Entrypoint": ["sh"], "Cmd": ["-c", "true"], "Env": ["PATH=/bin"]},
        tag="v1",
    )
    return layout


def test_a_bundle_is_converted_in_place(bundle: Path, signing_key: bytes) -> None:
    conversion = convert_bundle(bundle, trusted=["/etc"], key_pem=signing_key, isv_svn=3)
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["env"] == [
        "PATH=/bin",
        "ENCLAVE_TYPE=sim",
        "ENCLAVE_RUNTIME_PATH=builtin:native",
    ]
    assert conversion.entrypoint == "/bin/sh"
    assert conversion.manifest.paths == ("/bin/sh", "/etc/motd")
    rootfs = str(bundle / "rootfs")
    assert (bundle / "rootfs" / SIGNATURE_PATH).exists()
    launched = launch_enclave(LaunchRequest(rootfs, NATIVE, "/bin/sh"))
    assert launched.signed and launched.mr_enclave == conversion.mr_enclave
    assert launched.identity.isv_svn == 3
    # converting again replaces the settings, not adds to them
    convert_bundle(bundle, key_pem=signing_key)
    env = json.loads((bundle / "config.json").read_text())["process"]["env"]
    assert env.count("ENCLAVE_TYPE=sim") == 1


def test_a_signer_callable_can_sign_instead_of_a_key(bundle: Path, signing_key: bytes) -> None:
    calls = []
    key = key_signer(signing_key)

    def signer(material: bytes) -> tuple[bytes, int]:
        calls.append(material)
        return key(material)

    conversion = convert_bundle(bundle, signer=signer)
    assert len(calls) == 1
    assert conversion.signature.sigstruct.signed_bytes == calls[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"runtime": "builtin:python"}, "unknown enclave runtime 'builtin:python'"),
        ({"args": []}, "has no program to run"),
        ({"args": ["/etc/run.sh"]}, "/etc/run.sh is a script"),
        ({"runtime": "builtin:wasm"}, "/bin/sh is not a WebAssembly module"),
        ({"args": ["nothere"]}, "'nothere' is not found in PATH /bin"),
        ({"key": b"not a key"}, "not an unencrypted PEM private key"),
        ({"key": None}, "a signing key"),
    ],
)
def test_what_cannot_be_converted_is_refused(
    bundle: Path, signing_key: bytes, change: dict[str, object], message: str
) -> None:
    (bundle / "rootfs" / "etc" / "run.sh").write_text("#!/bin/sh\n")
    config = json.loads((bundle / "config.json").read_text())
    if "args" in change:
        config["process"]["args"] = change["args"]
    (bundle / "config.json").write_text(json.dumps(config))
    before = (bundle / "config.json").read_bytes()
    key = change.get("key", signing_key)
    runtime = str(change.get("runtime", "builtin:native"))
    with pytest.raises(InclavareError, match=message):
        convert_bundle(bundle, runtime, key_pem=key if isinstance(key, bytes) else None)
    assert (bundle / "config.json").read_bytes() == before
    assert not (bundle / "rootfs" / SIGNATURE_PATH).exists()


def test_an_image_is_converted_into_a_new_image(
    image: Path, tmp_path: Path, signing_key: bytes
) -> None:
    target = tmp_path / "converted"
    conversion = convert_image(image, "v1", target, None, trusted=["/etc"], key_pem=signing_key)
    converted = Layout.open(target).image("v1")
    assert conversion.image == converted.descriptor
    env = converted.runtime_config["Env"]
    assert env == ["PATH=/bin", "ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:native"]
    base = Layout.open(image).image("v1")
    assert converted.layers[:-1] == base.layers
    bundle = tmp_path / "bundle"
    unpack_to_bundle(target, "v1", bundle)
    rootfs = str(bundle / "rootfs")
    # the image's measurement is the one of its unpacked root file system
    assert measure(rootfs, NATIVE, ["/bin/sh", "/etc"]).mr_enclave == conversion.mr_enclave
    launched = launch_enclave(LaunchRequest(rootfs, NATIVE, "/bin/sh"))
    assert launched.signed and launched.mr_enclave == conversion.mr_enclave
    (bundle / "rootfs" / "etc" / "motd").write_text("changed\n")
    with pytest.raises(LaunchRefused, match="trusted file /etc/motd differs"):
        launch_enclave(LaunchRequest(rootfs, NATIVE, "/bin/sh"))


def test_an_image_with_a_script_entrypoint_is_refused(
    image: Path, tmp_path: Path, signing_key: bytes
) -> None:
    make_layout(
        image,
        [[file("app/run.sh", "#!/bin/sh\n", 0o755)]],
        config={"Cmd": ["/app/run.sh"]},
        tag="script",
    )
    with pytest.raises(ConversionError, match=r"/app/run\.sh is a script"):
        convert_image(image, "script", tmp_path / "out", None, key_pem=signing_key)
    assert not (tmp_path / "out").exists()


def test_cli_convert_and_convert_image(
    bundle: Path,
    image: Path,
    tmp_path: Path,
    key_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert enclave_sign(["convert", str(bundle), "--key", str(key_file), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["simulated"] is True and document["entrypoint"] == "/bin/sh"
    assert enclave_sign(["verify", str(bundle)]) == 0
    capsys.readouterr()
    target = tmp_path / "out"
    code = enclave_sign(
        ["convert-image", f"{image}:v1", f"{target}:enclave", "--key", str(key_file)]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "simulated enclave (sim TEE" in out and f"wrote {target}:enclave" in out
    assert Layout.open(target).tags() == ["enclave"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["convert-image", "{image}:v9", "{out}"], "no image tagged 'v9'"),
        (["convert-image", "{out}", "{out}"], "is not an OCI image layout"),
        (["convert", "{out}"], "out/config.json: No such file"),
        (["convert", "{bundle}", "--runtime", "/lib/pal.so"], "unknown enclave runtime"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    bundle: Path,
    image: Path,
    tmp_path: Path,
    key_file: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    names = {"image": image, "out": tmp_path / "out", "bundle": bundle}
    argv = [word.format(**names) for word in argv]
    assert enclave_sign([*argv, "--key", str(key_file)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_the_signature_is_never_written_through_a_link(
    bundle: Path, tmp_path: Path, signing_key: bytes
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("precious\n")
    signature_directory = bundle / "rootfs" / ".inclavare"
    signature_directory.symlink_to(outside)
    with pytest.raises(ConversionError, match=r"\.inclavare is a symbolic link"):
        convert_bundle(bundle, key_pem=signing_key)
    signature_directory.unlink()
    signature_directory.mkdir()
    (signature_directory / "enclave.sig").symlink_to(victim)
    convert_bundle(bundle, key_pem=signing_key)
    assert victim.read_text() == "precious\n"
    assert not (signature_directory / "enclave.sig").is_symlink()
    assert sorted(path.name for path in signature_directory.iterdir()) == ["enclave.sig"]
