"""Images converted into sim enclave images (`enclave-sign convert-image`), unpacked into
bundles and run by rune; a tampered image is refused at launch, naming the file; and the
reference values `shelter mrverify` computes from an image are what rune's quote of it says."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from inclavare.cli.enclave_sign import main as enclave_sign
from inclavare.oci.image import Layout, build_layer, unpack_to_bundle, write_layout
from tests.integration.conftest import LeakCheck, Rune, rune_path
from tests.unit.oci.layouts import busybox_layout, directory, file, make_layout

WASM_SOURCES = Path(__file__).resolve().parent / "wasm"


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


# --- reference values against a real launch -------------------------------------------------


def quoted_measurements(
    rune: Rune, bundle: Path, sim_dir: Path, tmp_path: Path, policy: Path | None = None
) -> tuple[int, dict[str, Any]]:
    """Create the enclave container (not started: it can be attested already), have rune
    quote it, and verify the quote with shelter; returns shelter's exit code and verdict."""
    leaks = LeakCheck(rune, bundle)
    container_id = leaks.new_id()
    try:
        rune.detached("create", "-b", str(bundle), container_id, output=tmp_path / "out")
        quote = tmp_path / "quote.dat"
        rune("attest", "--isRA", "--quote-type", "ecdsa", "--output", str(quote), container_id)
    finally:
        rune("delete", "--force", container_id, check=False)
    leaks.assert_clean(container_id)
    argv = ["verify", "--json", "--roots", str(sim_dir / "root-ca.pem"), str(quote)]
    argv += ["--policy", str(policy)] if policy else ["--allow-sim"]
    result = subprocess.run(
        [shelter_path(), *argv], capture_output=True, text=True, timeout=60, check=False
    )
    verdict: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, verdict


def shelter_path() -> str:
    return str(Path(rune_path()).with_name("shelter"))


def mrverify(*argv: str) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [shelter_path(), "mrverify", *argv, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, document


def test_mrverify_of_the_image_is_what_rune_quotes(
    converted: tuple[Path, Path], rune: Rune, sim_dir: Path, tmp_path: Path
) -> None:
    layout, key = converted
    policy = tmp_path / "policy.toml"
    code, expected = mrverify(
        "--image", f"{layout}:enclave", "--key", str(key), "--policy-out", str(policy)
    )
    assert code == 0 and expected["consistent"] is True
    bundle = unpack(layout, "enclave", tmp_path / "bundle", "sh", "-c", "sleep 30")
    code, verdict = quoted_measurements(rune, bundle, sim_dir, tmp_path)
    assert code == 0, verdict
    claims = verdict["claims"]
    assert verdict["tee"] == "sim"
    assert claims["mrenclave"] == expected["mrenclave"]
    assert claims["mrsigner"] == expected["mrsigner"]
    assert claims["isv_prod_id"] == expected["isv_prod_id"]
    assert claims["isv_svn"] == expected["isv_svn"]
    assert claims["debug"] is expected["debug"] is False
    # the policy mrverify wrote refuses sim evidence until asked to accept it
    code, verdict = quoted_measurements(rune, bundle, sim_dir, tmp_path, policy)
    assert code == 1 and "simulated TEE, which is not allowed" in verdict["reason"]
    code, _ = mrverify("--image", f"{layout}:enclave", "--policy-out", str(policy), "--allow-sim")
    assert code == 0
    code, verdict = quoted_measurements(rune, bundle, sim_dir, tmp_path, policy)
    assert code == 0, verdict
    # the reference values of another image (the unconverted one) do not accept this enclave
    other = tmp_path / "other.toml"
    code, _ = mrverify("--image", f"{layout}:1", "--policy-out", str(other), "--allow-sim")
    assert code == 0
    code, verdict = quoted_measurements(rune, bundle, sim_dir, tmp_path, other)
    assert code == 1 and "mrenclave" in verdict["reason"], verdict


def test_mrverify_of_a_wasm_image_is_what_rune_quotes(
    rune: Rune, sim_dir: Path, tmp_path: Path, converted: tuple[Path, Path]
) -> None:
    wasmtime = pytest.importorskip("wasmtime")
    _, key = converted
    module = wasmtime.wat2wasm((WASM_SOURCES / "echo.wat").read_text())
    layout = tmp_path / "wasm-image"
    make_layout(
        layout,
        [[directory("app"), file("app/echo.wasm", module), file("app/data.txt", "data\n")]],
        config={"Entrypoint": ["/app/echo.wasm"], "Cmd": ["hello"]},
        tag="1",
    )
    code, unsigned = mrverify(
        "--image", f"{layout}:1", "--runtime", "builtin:wasm", "--trusted", "/app"
    )
    assert code == 0 and unsigned["runtime"] == "builtin:wasm@1"
    argv = ["convert-image", f"{layout}:1", f"{layout}:enclave", "--key", str(key)]
    assert enclave_sign([*argv, "--runtime", "builtin:wasm", "--trusted", "/app"]) == 0
    code, expected = mrverify("--image", f"{layout}:enclave")
    assert code == 0 and expected["mrenclave"] == unsigned["mrenclave"]
    bundle = unpack(layout, "enclave", tmp_path / "bundle")
    code, verdict = quoted_measurements(rune, bundle, sim_dir, tmp_path)
    assert code == 0, verdict
    assert verdict["claims"]["mrenclave"] == expected["mrenclave"]
    assert verdict["claims"]["mrsigner"] == expected["mrsigner"]
