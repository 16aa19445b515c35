"""`enclave-sign`: keys, measurement, signing and the offline launch check of a bundle."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from inclavare.cli.enclave_sign import main
from inclavare.tee.sim.errors import LaunchRefused
from inclavare.tee.sim.files import SIGNATURE_PATH, LaunchRequest, launch_enclave
from inclavare.tee.sim.measurement import RuntimeIdentity


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    (root / "rootfs" / "bin").mkdir(parents=True)
    (root / "rootfs" / "bin" / "busybox").write_bytes(b"\x7fELF busybox")
    os.symlink("busybox", root / "rootfs" / "bin" / "sh")
    (root / "rootfs" / "srv").mkdir()
    (root / "rootfs" / "srv" / "index.html").write_text("<h1>hi</h1>\n")
    config = {
        "ociVersion": "1.1.0",
        "root": {"path": "rootfs"},
        "process": {
            "args": ["sh", "-c", "httpd"],
            "env": ["PATH=/bin", "ENCLAVE_TYPE=sim"],
            "cwd": "/",
        },
    }
    (root / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture
def key_file(tmp_path: Path, signing_key: bytes) -> Path:
    path = tmp_path / "signing.pem"
    path.write_bytes(signing_key)
    return path


def test_genkey_writes_a_private_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "key.pem"
    code, out, _ = run(["genkey", str(key)], capsys)
    assert code == 0 and "RSA-3072 (exponent 3)" in out
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    code, _, err = run(["genkey", str(key)], capsys)
    assert code == 2
    assert err == f"enclave-sign genkey: {key} exists (give --force to replace it)\n"


def test_sign_then_verify_then_launch(
    bundle: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        ["sign", str(bundle), "--key", str(key_file), "--trusted", "/srv", "--isvsvn", "2"],
        capsys,
    )
    assert code == 0, out
    assert "signed 2 trusted file(s) for runtime builtin:native@1" in out
    assert (bundle / "rootfs" / SIGNATURE_PATH).is_file()

    code, out, _ = run(["verify", "--json", str(bundle)], capsys)
    assert code == 0
    document = json.loads(out)
    assert document["launch"] == "allowed" and document["simulated"] is True
    assert [f["path"] for f in document["files"]] == ["/bin/sh", "/srv/index.html"]
    assert (document["isv_svn"], document["debug"]) == (2, False)

    code, out, _ = run(["measure", "--json", str(bundle), "--trusted", "/srv"], capsys)
    assert json.loads(out)["mrenclave"] == document["mrenclave"]

    enclave = launch_enclave(
        LaunchRequest(str(bundle / "rootfs"), RuntimeIdentity("builtin:native", "1"), "/bin/sh")
    )
    assert enclave.signed and enclave.mr_enclave.hex() == document["mrenclave"]


def test_verify_names_the_changed_file(
    bundle: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(["sign", str(bundle), "--key", str(key_file), "--trusted", "/srv"], capsys)
    (bundle / "rootfs" / "srv" / "index.html").write_text("<h1>defaced</h1>\n")
    code, out, _ = run(["verify", str(bundle)], capsys)
    assert code == 1
    assert out.startswith("enclave launch refused: trusted file /srv/index.html differs")
    with pytest.raises(LaunchRefused, match=r"/srv/index\.html differs"):
        launch_enclave(
            LaunchRequest(str(bundle / "rootfs"), RuntimeIdentity("builtin:native", "1"), "/bin/sh")
        )


def test_runtime_comes_from_the_bundle_or_the_option(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["env"] = ["PATH=/bin"]
    config["annotations"] = {
        "enclave.type": "sim",
        "enclave.runtime.path": "/opt/liberpal-skeleton-v3.so",
    }
    (bundle / "config.json").write_text(json.dumps(config))
    code, out, _ = run(["measure", str(bundle)], capsys)
    assert code == 0 and "runtime pal:liberpal-skeleton-v3.so" in out
    code, out, _ = run(["measure", str(bundle), "--runtime", "builtin:wasm@1"], capsys)
    assert "runtime builtin:wasm@1" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"process": {"args": ["nothere"], "env": ["ENCLAVE_TYPE=sim"]}},
            "'nothere' is not found in PATH",
        ),
        ({"process": {"args": ["/bin/sh"], "env": []}}, "sets no enclave type"),
        (
            {"process": {"args": [], "env": ["ENCLAVE_TYPE=sim"]}},
            "process.args must name a program",
        ),
        (
            {"process": {"args": ["/bin/sh"], "env": ["ENCLAVE_TYPE=tdx"]}},
            "unknown enclave type 'tdx'",
        ),
    ],
)
def test_bad_bundles_are_one_line_errors(
    bundle: Path,
    key_file: Path,
    change: dict[str, object],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config.update(change)
    (bundle / "config.json").write_text(json.dumps(config))
    code, _, err = run(["sign", str(bundle), "--key", str(key_file)], capsys)
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_bad_inputs_are_one_line_errors(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_key = tmp_path / "config-as-key.pem"
    not_a_key.write_text("{}")
    cases = [
        (["sign", str(bundle), "--key", str(not_a_key)], "not an unencrypted PEM private key"),
        (["sign", str(bundle), "--key", str(tmp_path / "none.pem")], "cannot read the key"),
        (["verify", str(bundle)], "no signature file at"),
        (["measure", str(tmp_path / "nobundle")], "cannot read"),
    ]
    for argv, message in cases:
        code, _, err = run(argv, capsys)
        assert code == 2, argv
        assert message in err and err.count("\n") == 1, err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_status:
        main(["--help"])
    assert exit_status.value.code == 0
    out = capsys.readouterr().out
    for command in ("genkey", "measure", "sign", "verify", "simulated TEE"):
        assert command in out
