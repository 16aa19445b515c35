"""enclave-tls-server and enclave-tls-client as programs: flags, output, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.cli import enclave_tls_client, enclave_tls_server, shelter
from inclavare.tee.sim.store import root_ca_path

REPO_ROOT = Path(__file__).resolve().parents[3]


def _environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(REPO_ROOT / "src")
    return environment


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inclavare.cli.enclave_tls_server",
            "-a",
            "sim",
            "-m",
            "--allow-sim",
            "-p",
            "0",
            "-l",
            "debug",
            "--cert-out",
            str(tmp_path / "server.pem"),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    assert match, line
    process.port = int(match.group(1))  # type: ignore[attr-defined]
    yield process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    process.stderr.close()


def test_client_prints_verified_claims_and_server_echoes(
    server_process: subprocess.Popen[str], tmp_path: Path
) -> None:
    port = str(server_process.port)  # type: ignore[attr-defined]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "inclavare.cli.enclave_tls_client",
            "-p",
            port,
            "-m",
            "-a",
            "sim",
            "--allow-sim",
            "--cert-out",
            str(tmp_path / "client.pem"),
        ],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["evidence_type"] == "sim" and document["simulated"] is True
    assert document["session_bound"] is True and document["verified"] is True
    assert "mrenclave" in document["verdict"]["claims"]
    assert "server echoed: Hello and welcome to Enclave-TLS!" in done.stderr
    roots = str(root_ca_path())
    for name in ("server.pem", "client.pem"):
        assert shelter.main(["verify", "--allow-sim", "--roots", roots, str(tmp_path / name)]) == 0
    server_process.send_signal(signal.SIGTERM)
    assert server_process.wait(10) == 0
    assert server_process.stderr is not None
    log = server_process.stderr.read()
    assert "client attested: peer verified by sim" in log and "stopped" in log


def test_client_refusal_is_one_line(server_process: subprocess.Popen[str]) -> None:
    port = str(server_process.port)  # type: ignore[attr-defined]
    done = subprocess.run(
        [sys.executable, "-m", "inclavare.cli.enclave_tls_client", "-p", port, "-m", "-a", "sim"],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "enclave-tls-client: the quote comes from a simulated TEE, which is not allowed"
    )


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert enclave_tls_client.main(["-a", "sgx_la"]) == 2
    assert "unknown attester 'sgx_la'" in capsys.readouterr().err
    assert enclave_tls_client.main(["--policy", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read --policy" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text("mrenclav = 1\n")
    assert enclave_tls_server.main(["--policy", str(tmp_path / "bad.toml")]) == 2
    assert "unknown rule 'mrenclav'" in capsys.readouterr().err
    assert enclave_tls_server.main(["-a", "tdx_ecdsa"]) == 2
    assert "attester tdx_ecdsa: unavailable on this host" in capsys.readouterr().err
    assert enclave_tls_client.main(["-p", "1", "--allow-sim", "--timeout", "2"]) == 1
    assert "cannot connect to 127.0.0.1:1" in capsys.readouterr().err
