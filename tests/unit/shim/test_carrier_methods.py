"""The carrier on a bundle of its own (no containerd): the key method with the cache in
front, accepted signers, client mode, and a cache that cannot be used."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from inclavare.shim import carrier
from inclavare.shim.ttrpc_server import RpcError
from inclavare.tee.sim.sigstruct import generate_signing_key, parse_signature_file

BUSYBOX = "/bin/busybox"
pytestmark = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static")


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "key.pem"
    path.write_bytes(generate_signing_key())
    return path


def bundle(tmp_path: Path, name: str = "bundle") -> Path:
    directory = tmp_path / name
    (directory / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, directory / "rootfs" / "bin" / "busybox")
    config = {
        "root": {"path": "rootfs"},
        "process": {"args": ["/bin/busybox", "true"], "env": ["PATH=/bin"], "cwd": "/"},
    }
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def signature_of(directory: Path) -> bytes:
    return (directory / "rootfs" / ".inclavare" / "enclave.sig").read_bytes()


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text + f'\n[enclave_runtime.cache]\ndirectory = "{tmp_path}/cache"\n')
    return str(path)


def test_the_second_conversion_takes_the_signature_from_the_cache(
    tmp_path: Path, key: Path
) -> None:
    path = config(tmp_path, 'log_level = "debug"')
    lines: list[str] = []
    first, second = bundle(tmp_path, "first"), bundle(tmp_path, "second")
    carrier.convert(str(first), "native", str(key), path, lines.append)
    carrier.convert(str(second), "native", str(key), path, lines.append)
    assert signature_of(first) == signature_of(second)
    assert lines[0].endswith(", signed") and lines[1].endswith(", signature from the cache")
    env = json.loads((second / "config.json").read_text())["process"]["env"]
    assert env[-2:] == ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:native"]
    # another key is another signer: signed again
    other = tmp_path / "other.pem"
    other.write_bytes(generate_signing_key())
    third = bundle(tmp_path, "third")
    carrier.convert(str(third), "native", str(other), path, lines.append)
    assert lines[-1].endswith(", signed")
    assert len(list((tmp_path / "cache").glob("*.entry"))) == 2


def test_a_key_the_node_does_not_accept(tmp_path: Path, key: Path) -> None:
    path = config(tmp_path, f'[enclave_runtime]\naccepted_signers = ["{"ab" * 32}"]')
    with pytest.raises(RpcError) as caught:
        carrier.convert(str(bundle(tmp_path)), "native", str(key), path)
    assert caught.value.message.startswith(f"RUNE_CARRIER=native: signing key {key}: its MRSIGNER")
    assert caught.value.message.endswith("is not one of enclave_runtime.accepted_signers")


def test_a_cache_directory_that_is_a_file_costs_only_the_caching(tmp_path: Path, key: Path) -> None:
    path = tmp_path / "config.toml"
    (tmp_path / "not-a-directory").write_text("")
    path.write_text(f'[enclave_runtime.cache]\ndirectory = "{tmp_path}/not-a-directory"\n')
    lines: list[str] = []
    converted = bundle(tmp_path)
    carrier.convert(str(converted), "native", str(key), str(path), lines.append)
    parse_signature_file(signature_of(converted)).verify()
    assert any("continuing without caching" in line for line in lines)


def test_client_mode_checks_the_signature_the_bundle_carries(tmp_path: Path, key: Path) -> None:
    signed = bundle(tmp_path, "signed")
    carrier.convert(str(signed), "native", str(key), config(tmp_path, ""))
    client = config(tmp_path, '[enclave_runtime]\nsignature_method = "client"')
    carrier.convert(str(signed), "native", "", client)
    # a trusted file changed after signing
    (signed / "rootfs" / "bin" / "busybox").write_bytes(b"\x7fELF not busybox")
    with pytest.raises(RpcError, match="enclave launch refused: trusted file /bin/busybox"):
        carrier.convert(str(signed), "native", "", client)
    with pytest.raises(RpcError, match="the image carries no enclave signature"):
        carrier.convert(str(bundle(tmp_path, "unsigned")), "native", "", client)


def test_a_named_config_that_is_missing(tmp_path: Path) -> None:
    with pytest.raises(RpcError) as caught:
        carrier.convert(str(bundle(tmp_path)), "native", "", str(tmp_path / "nowhere.toml"))
    assert caught.value.message == f"RUNE_CARRIER=native: {tmp_path}/nowhere.toml: no such file"
