"""The carrier's signature methods through containerd and containerd-shim-rune-v2:
`server` (rune-sign-server over TLS, the conversion cache in front of it), a server that is
down or untrusted, and `client` (an image signed off the node, an unsigned one, a tampered
one, a signer the node does not accept)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from inclavare.tee.sim.sigstruct import parse_signature_file
from tests.e2e.daemons import Containerd, start_containerd
from tests.e2e.images import build_converted_archive
from tests.e2e.test_shim import RUNTIME, SHIM, assert_nothing_left, bundle_of, remove
from tests.signing_pki import Pki, make_pki

pytestmark = pytest.mark.daemon
CONVERTED = "localhost/converted"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def converted_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_converted_archive(tmp_path_factory.mktemp("converted"))


@pytest.fixture(scope="module")
def carrier_containerd(
    tmp_path_factory: pytest.TempPathFactory,
    image_archive: tuple[Path, str],
    converted_archive: Path,
    rune_program: str,
) -> Iterator[Containerd]:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed: run `make install`")
    launchers = Path(rune_program).parent
    if not os.access(launchers / SHIM, os.X_OK):
        pytest.skip(f"{SHIM} is not installed beside {rune_program}: run `make install`")
    directory = tmp_path_factory.mktemp("containerd-carrier")
    daemon = start_containerd(
        directory, path=[str(launchers)], variables={"INCLAVARE_SIM_DIR": f"{directory}/sim"}
    )
    try:
        daemon.ctr("images", "import", str(image_archive[0]))
        daemon.ctr("images", "import", "--base-name", CONVERTED, str(converted_archive))
        yield daemon
        daemon.remove_everything()
    finally:
        daemon.stop()


@pytest.fixture(autouse=True)
def _clean_after(carrier_containerd: Containerd) -> Iterator[None]:
    yield
    carrier_containerd.remove_everything()


class SignServerProcess:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.address = f"https://127.0.0.1:{port}"

    def stop(self) -> list[dict[str, object]]:
        """Stop it (SIGTERM) and return its log."""
        self.process.send_signal(signal.SIGTERM)
        _, errors = self.process.communicate(timeout=15)
        return [json.loads(line) for line in errors.splitlines()]


@pytest.fixture
def sign_server(pki: Pki, rune_program: str) -> Iterator[SignServerProcess]:
    yield from start_sign_server(pki, rune_program)


def start_sign_server(
    pki: Pki, rune_program: str, *more: str
) -> Generator[SignServerProcess, None, None]:
    program = Path(rune_program).parent / "rune-sign-server"
    if not program.exists():
        pytest.skip(f"rune-sign-server is not installed beside {rune_program}")
    process = subprocess.Popen(
        [
            str(program),
            "--listen",
            "127.0.0.1:0",
            "--key",
            str(pki.signing_key),
            "--cert",
            str(pki.server_certificate),
            "--tls-key",
            str(pki.server_key),
            *more,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on https://"), line
        yield SignServerProcess(process, int(line.rsplit(":", 1)[1]))
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def configure(tmp_path: Path, text: str) -> Path:
    """A config.toml with `text`, and the runtime options file that names it."""
    config = tmp_path / "config.toml"
    config.write_text(text)
    options = tmp_path / "rune.toml"
    options.write_text(f'InclavareConfig = "{config}"\n')
    return options


def server_config(tmp_path: Path, address: str, ca: Path, method: str = "server") -> str:
    return (
        "[enclave_runtime]\n"
        f'signature_method = "{method}"\n'
        "[enclave_runtime.signature_server]\n"
        f'address = "{address}"\n'
        f'ca = "{ca}"\n'
        "timeout = 5\n"
        "[enclave_runtime.cache]\n"
        f'directory = "{tmp_path}/cache"\n'
        'max_size = "1MiB"\n'
    )


def run(
    containerd: Containerd,
    options: Path,
    image: str,
    name: str,
    *command: str,
    detach: bool = False,
) -> subprocess.CompletedProcess[str]:
    return containerd.ctr(
        "run",
        "-d" if detach else "--rm",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        str(options),
        "--env",
        "RUNE_CARRIER=native",
        image,
        name,
        *command,
        check=False,
    )


def mr_signer_of_key(pki: Pki) -> str:
    from inclavare.shim.sign_server import SigningKey

    return SigningKey(pki.signing_key.read_bytes()).mr_signer.hex()


def test_the_signing_server_signs_and_the_cache_spares_the_second_signature(
    carrier_containerd: Containerd,
    image_archive: tuple[Path, str],
    sign_server: SignServerProcess,
    pki: Pki,
    rune_program: str,
    tmp_path: Path,
) -> None:
    options = configure(tmp_path, server_config(tmp_path, sign_server.address, pki.ca))
    image = image_archive[1]
    first = run(carrier_containerd, options, image, "signed", "/bin/busybox", "echo", "enclave")
    assert (first.returncode, first.stdout) == (0, "enclave\n"), first.stderr
    assert_nothing_left(carrier_containerd, "signed")
    assert len(list((tmp_path / "cache").glob("*.entry"))) == 1
    # the same image again: the signature comes from the cache, the server is not asked
    second = run(
        carrier_containerd, options, image, "cached", "/bin/busybox", "sleep", "300", detach=True
    )
    assert second.returncode == 0, second.stderr
    bundle = bundle_of(carrier_containerd, "cached")
    signature = parse_signature_file((bundle / "rootfs/.inclavare/enclave.sig").read_bytes())
    signature.verify()
    assert signature.sigstruct.mr_signer.hex() == mr_signer_of_key(pki)
    env = json.loads((bundle / "config.json").read_text())["process"]["env"]
    assert "ENCLAVE_TYPE=sim" in env and "ENCLAVE_RUNTIME_PATH=builtin:native" in env
    # rune's report of the running enclave names the server's key
    report = subprocess.run(
        [
            rune_program,
            "--root",
            f"/run/containerd/rune/{carrier_containerd.namespace}",
            "attest",
            "cached",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, INCLAVARE_SIM_DIR=str(carrier_containerd.directory / "sim")),
    )
    assert report.returncode == 0, report.stderr
    attested = json.loads(report.stdout)
    assert attested["mrsigner"] == mr_signer_of_key(pki)
    assert attested["mrenclave"] == signature.sigstruct.enclave_hash.hex()
    remove(carrier_containerd, "cached")
    log = sign_server.stop()
    signed = [record for record in log if record.get("path") == "/api/v1/signature/pkcs1"]
    assert [record["status"] for record in signed] == [200]
    # a corrupted entry is not used: the server (stopped now) would be asked and fails
    entry = next((tmp_path / "cache").glob("*.entry"))
    entry.write_bytes(entry.read_bytes()[:-1] + b"?")
    broken = run(carrier_containerd, options, image, "corrupt", "/bin/busybox", "true")
    assert broken.returncode != 0
    assert f"signing server {sign_server.address}: Connection refused" in broken.stderr
    assert not entry.exists()
    containerd_log = (carrier_containerd.directory / "containerd.log").read_text()
    assert "carrier cache: discarding" in containerd_log
    assert "checksum mismatch (corrupted)" in containerd_log
    carrier_containerd.ctr("containers", "delete", "corrupt", check=False)
    assert_nothing_left(carrier_containerd, "corrupt")


def test_mutual_tls_and_a_pinned_server_key_from_config_toml(
    carrier_containerd: Containerd,
    image_archive: tuple[Path, str],
    pki: Pki,
    rune_program: str,
    tmp_path: Path,
) -> None:
    servers = start_sign_server(pki, rune_program, "--client-ca", str(pki.client_ca))
    server = next(servers)
    try:
        common = (
            "[enclave_runtime]\n"
            'signature_method = "server"\n'
            f'accepted_signers = ["{mr_signer_of_key(pki)}"]\n'
            "[enclave_runtime.cache]\n"
            f'directory = "{tmp_path}/cache"\n'
            "[enclave_runtime.signature_server]\n"
            f'address = "{server.address}"\n'
            f'pinned_key_sha256 = "{pki.server_spki_sha256}"\n'
        )
        options = configure(tmp_path, common)
        anonymous = run(carrier_containerd, options, image_archive[1], "anonymous", "/bin/true")
        assert anonymous.returncode != 0
        assert f"signing server {server.address}: the server " in anonymous.stderr
        carrier_containerd.ctr("containers", "delete", "anonymous", check=False)
        assert_nothing_left(carrier_containerd, "anonymous")
        options = configure(
            tmp_path,
            common
            + f'client_certificate = "{pki.client_certificate}"\n'
            + f'client_key = "{pki.client_key}"\n',
        )
        node = run(carrier_containerd, options, image_archive[1], "node", "/bin/busybox", "true")
        assert node.returncode == 0, node.stderr
        assert_nothing_left(carrier_containerd, "node")
        log = server.stop()
        assert [record.get("client_certificate") for record in log if "status" in record] == [
            "node-1"
        ]
    finally:
        servers.close()


def test_a_signing_server_that_is_down_fails_create_and_leaves_nothing(
    carrier_containerd: Containerd, image_archive: tuple[Path, str], pki: Pki, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"https://127.0.0.1:{port}"
    options = configure(tmp_path, server_config(tmp_path, address, pki.ca))
    result = run(carrier_containerd, options, image_archive[1], "down", "/bin/busybox", "true")
    assert result.returncode != 0
    assert f"RUNE_CARRIER=native: signing server {address}: Connection refused" in result.stderr
    carrier_containerd.ctr("containers", "delete", "down", check=False)
    assert_nothing_left(carrier_containerd, "down")


def test_a_signing_server_with_an_untrusted_certificate_is_refused(
    carrier_containerd: Containerd,
    image_archive: tuple[Path, str],
    sign_server: SignServerProcess,
    pki: Pki,
    tmp_path: Path,
) -> None:
    options = configure(tmp_path, server_config(tmp_path, sign_server.address, pki.other_ca))
    result = run(carrier_containerd, options, image_archive[1], "untrusted", "/bin/true")
    assert result.returncode != 0
    assert f"signing server {sign_server.address}: its certificate is not trusted" in result.stderr
    carrier_containerd.ctr("containers", "delete", "untrusted", check=False)
    assert_nothing_left(carrier_containerd, "untrusted")
    assert not [record for record in sign_server.stop() if record.get("status") == 200]


def test_a_malformed_config_fails_create_naming_the_key(
    carrier_containerd: Containerd, image_archive: tuple[Path, str], tmp_path: Path
) -> None:
    options = configure(tmp_path, '[enclave_runtime]\nsignature_method = "hsm"\n')
    result = run(carrier_containerd, options, image_archive[1], "badconfig", "/bin/true")
    assert result.returncode != 0
    assert (
        f"RUNE_CARRIER=native: {tmp_path}/config.toml: enclave_runtime.signature_method: 'hsm'"
        in result.stderr
    )
    carrier_containerd.ctr("containers", "delete", "badconfig", check=False)
    assert_nothing_left(carrier_containerd, "badconfig")


def client_config(signers: list[str]) -> str:
    listed = ", ".join(f'"{signer}"' for signer in signers)
    return f'[enclave_runtime]\nsignature_method = "client"\naccepted_signers = [{listed}]\n'


def converted_mr_signer(converted_archive: Path) -> str:
    return str(json.loads((converted_archive.parent / "conversion.json").read_text())["mrsigner"])


def test_client_mode_runs_an_image_signed_off_the_node(
    carrier_containerd: Containerd, converted_archive: Path, tmp_path: Path
) -> None:
    options = configure(tmp_path, client_config([converted_mr_signer(converted_archive)]))
    result = run(
        carrier_containerd,
        options,
        f"{CONVERTED}:enclave",
        "presigned",
        "sh",
        "-c",
        "echo presigned",
    )
    assert (result.returncode, result.stdout) == (0, "presigned\n"), result.stderr
    assert_nothing_left(carrier_containerd, "presigned")


@pytest.mark.parametrize(
    ("image", "signer", "message"),
    [
        (
            "plain",
            None,
            "signature_method client: the image carries no enclave signature "
            "(/.inclavare/enclave.sig)",
        ),
        (f"{CONVERTED}:tampered", None, "enclave launch refused: trusted file /etc/passwd"),
        (
            f"{CONVERTED}:enclave",
            "0" * 64,
            "signature_method client: the image's enclave is signed by MRSIGNER ",
        ),
    ],
)
def test_client_mode_refuses_what_is_not_signed_as_it_should_be(
    carrier_containerd: Containerd,
    image_archive: tuple[Path, str],
    converted_archive: Path,
    tmp_path: Path,
    image: str,
    signer: str | None,
    message: str,
) -> None:
    options = configure(tmp_path, client_config([signer or converted_mr_signer(converted_archive)]))
    reference = image_archive[1] if image == "plain" else image
    result = run(carrier_containerd, options, reference, "refused", "sh", "-c", "true")
    assert result.returncode != 0
    assert f"RUNE_CARRIER=native: {message}" in result.stderr
    carrier_containerd.ctr("containers", "delete", "refused", check=False)
    assert_nothing_left(carrier_containerd, "refused")
