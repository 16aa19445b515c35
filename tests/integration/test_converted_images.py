"""Images converted into sim enclave images (`enclave-sign convert-image`), unpacked into
bundles and run by rune; a tampered image is refused at launch, naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inclavare.cli.enclave_sign import main as enclave_sign
from inclavare.oci.image import Layout, build_layer, unpack_to_bundle, write_layout
from tests.integration.conftest import LeakCheck, Rune
from tests.unit.oci.layouts import busybox_layout


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim") / "platform"


@pytest.fixture(autouse=True)
def _sim_platform(sim_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCLAVARE_SIM_DIR", str(sim_dir))


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The busybox image converted into a builtin:native enclave image (tag enclave),
    with /etc trusted; and its signing key."""
    directory = tmp_path_factory.mktemp("images")
    layout = busybox_layout(directory)
    key = directory / "signing.pem"
    assert enclave_sign(["genkey", str(key)]) == 0
    argv = ["convert-image", f"{layout}:1", f"{layout}:enclave", "--key", str(key)]
    assert enclave_sign([*argv, "--trusted", "/etc"]) == 0
    return layout, key


def unpack(layout: Path, tag: str, bundle: Path, *args: str) -> Path:
    unpack_to_bundle(layout, tag, bundle)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    if args:
        config["process"]["args"] = list(args)
    config_path.write_text(json.dumps(config))
    return bundle


def test_a_converted_image_runs_as_a_sim_enclave(
    converted: tuple[Path, Path], rune: Rune, tmp_path: Path
) -> None:
    layout, _ = converted
    bundle = unpack(layout, "enclave", tmp_path / "bundle", "sh", "-c", "echo launched; exit 4")
    env = json.loads((bundle / "config.json").read_text())["process"]["env"]
    assert "ENCLAVE_TYPE=sim" in env and "ENCLAVE_RUNTIME_PATH=builtin:native" in env
    leaks = LeakCheck(rune, bundle)
    container_id = leaks.new_id()
    result = rune("run", "-b", str(bundle), container_id, check=False)
    assert result.returncode == 4, result.stderr
    assert result.stdout == "launched\n"
    assert "simulated enclave (sim TEE, no protection against the host's root)" in result.stderr
    assert "production" in result.stderr  # signed with the key, not at launch
    leaks.assert_clean(container_id)


def test_a_tampered_converted_image_is_refused_naming_the_file(
    converted: tuple[Path, Path], rune: Rune, tmp_path: Path
) -> None:
    layout, _ = converted
    # another layer on top of the signed image changes a trusted file, keeping the signature
    image = Layout.open(layout).image("enclave")
    passwd = b"root:x:0:0:root:/root:/bin/sh\nintruder:x:0:0::/:/bin/sh\n"
    write_layout(image, layout, "tampered", build_layer({"/etc/passwd": passwd}))
    bundle = unpack(layout, "tampered", tmp_path / "bundle", "true")
    leaks = LeakCheck(rune, bundle)
    container_id = leaks.new_id()
    result = rune("run", "-b", str(bundle), container_id, check=False)
    assert result.returncode != 0
    assert "enclave launch refused: trusted file /etc/passwd differs" in result.stderr
    assert not (rune.root / container_id).exists()
    leaks.assert_clean(container_id)
