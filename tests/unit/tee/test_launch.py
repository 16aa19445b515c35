"""The launch check (EINIT): a signed enclave runs only as signed, and a refusal says why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.tee.sim.errors import LaunchRefused, SimError
from inclavare.tee.sim.files import (
    SIGNATURE_PATH,
    LaunchRequest,
    launch_enclave,
    measure,
    write_signature,
)
from inclavare.tee.sim.launch import LAUNCH_RECORD_SIZE, parse_launch_record
from inclavare.tee.sim.measurement import RuntimeIdentity
from inclavare.tee.sim.platform import SimPlatform
from inclavare.tee.sim.sgx import FLAG_DEBUG, FLAG_INIT, FLAG_MODE64BIT
from inclavare.tee.sim.sigstruct import sign_enclave

NATIVE = RuntimeIdentity("builtin:native", "1")


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "app").write_bytes(b"\x7fELF the application")
    (root / "lib").mkdir()
    (root / "lib" / "libc.so.6").write_bytes(b"\x7fELF the C library")
    (root / "etc").mkdir()
    (root / "etc" / "app.conf").write_text("port = 8080\n")
    return root


@pytest.fixture
def signed_rootfs(rootfs: Path, signing_key: bytes) -> Path:
    manifest = measure(rootfs, NATIVE, ["/bin/app", "/lib", "/etc/app.conf"])
    write_signature(rootfs / SIGNATURE_PATH, sign_enclave(signing_key, manifest, 3, 9))
    return rootfs


def request(
    root: Path, runtime: RuntimeIdentity = NATIVE, entrypoint: str = "/bin/app"
) -> LaunchRequest:
    return LaunchRequest(rootfs=str(root), runtime=runtime, entrypoint=entrypoint)


def test_a_signed_enclave_launches_with_its_identity(signed_rootfs: Path) -> None:
    enclave = launch_enclave(request(signed_rootfs))
    assert enclave.signed and not enclave.debug
    assert enclave.mr_enclave == enclave.manifest.mr_enclave
    assert enclave.mr_signer == enclave.signature.sigstruct.mr_signer
    assert (enclave.identity.isv_prod_id, enclave.identity.isv_svn) == (3, 9)
    assert enclave.identity.attributes.flags == FLAG_INIT | FLAG_MODE64BIT
    assert "simulated enclave" in enclave.describe()


def test_a_changed_trusted_file_is_named(signed_rootfs: Path) -> None:
    (signed_rootfs / "lib" / "libc.so.6").write_bytes(b"\x7fELF a patched C library")
    with pytest.raises(LaunchRefused, match=r"trusted file /lib/libc.so.6 differs") as refusal:
        launch_enclave(request(signed_rootfs))
    assert "signed SHA-256" in str(refusal.value)


def test_a_removed_trusted_file_is_named(signed_rootfs: Path) -> None:
    (signed_rootfs / "etc" / "app.conf").unlink()
    with pytest.raises(LaunchRefused, match=r"trusted file /etc/app\.conf is missing"):
        launch_enclave(request(signed_rootfs))


def test_a_file_replaced_by_a_symlink_is_measured_through_it(signed_rootfs: Path) -> None:
    (signed_rootfs / "etc" / "app.conf").unlink()
    (signed_rootfs / "etc" / "other.conf").write_text("port = 8080\n")
    os.symlink("other.conf", signed_rootfs / "etc" / "app.conf")
    launch_enclave(request(signed_rootfs))  # same content: the measurement holds


def test_another_runtime_is_refused(signed_rootfs: Path) -> None:
    wasm = RuntimeIdentity("builtin:wasm", "1")
    with pytest.raises(
        LaunchRefused, match="measured for runtime builtin:native@1, not builtin:wasm@1"
    ):
        launch_enclave(request(signed_rootfs, runtime=wasm))


def test_an_untrusted_entrypoint_is_refused(signed_rootfs: Path) -> None:
    (signed_rootfs / "bin" / "other").write_bytes(b"other")
    with pytest.raises(LaunchRefused, match="/bin/other is not among the enclave's trusted files"):
        launch_enclave(request(signed_rootfs, entrypoint="/bin/other"))


def test_a_damaged_signature_file_is_refused(signed_rootfs: Path) -> None:
    path = signed_rootfs / SIGNATURE_PATH
    data = bytearray(path.read_bytes())
    data[520] ^= 0x01  # a byte of the RSA signature
    path.write_bytes(bytes(data))
    with pytest.raises(LaunchRefused, match="enclave signature does not verify"):
        launch_enclave(request(signed_rootfs))
    path.write_bytes(b"garbage")
    with pytest.raises(LaunchRefused, match="not an enclave signature file"):
        launch_enclave(request(signed_rootfs))


def test_a_signature_by_another_key_launches_with_another_mrsigner(
    signed_rootfs: Path, other_signing_key: bytes
) -> None:
    first = launch_enclave(request(signed_rootfs))
    manifest = measure(signed_rootfs, NATIVE, ["/bin/app", "/lib", "/etc/app.conf"])
    write_signature(signed_rootfs / SIGNATURE_PATH, sign_enclave(other_signing_key, manifest, 3, 9))
    second = launch_enclave(request(signed_rootfs))
    assert second.mr_enclave == first.mr_enclave
    assert second.mr_signer != first.mr_signer


def test_an_unsigned_enclave_is_signed_at_launch_as_debug(rootfs: Path) -> None:
    enclave = launch_enclave(LaunchRequest(str(rootfs), NATIVE, "/bin/app", trusted=("/lib",)))
    assert not enclave.signed
    assert enclave.identity.attributes.flags & FLAG_DEBUG
    assert enclave.manifest.paths == ("/bin/app", "/lib/libc.so.6")
    assert "throwaway key" in enclave.describe()


def test_a_named_signature_must_exist(rootfs: Path, tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere.sig"
    with pytest.raises(LaunchRefused, match=f"the signature {missing} is missing"):
        launch_enclave(LaunchRequest(str(rootfs), NATIVE, "/bin/app", signature_path=str(missing)))


def test_an_unsigned_enclave_without_its_entrypoint_is_refused(rootfs: Path) -> None:
    with pytest.raises(LaunchRefused, match="trusted file /bin/none is missing"):
        launch_enclave(request(rootfs, entrypoint="/bin/none"))


def test_the_launch_record_carries_identity_and_report_keys(
    signed_rootfs: Path, platform: SimPlatform
) -> None:
    enclave = launch_enclave(request(signed_rootfs))
    record = platform.launch_record(enclave.identity)
    assert len(record) == LAUNCH_RECORD_SIZE
    identity, keys = parse_launch_record(record)
    assert identity == enclave.identity
    assert keys == platform.report_keys


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=LAUNCH_RECORD_SIZE + 8))
def test_arbitrary_launch_records_fail_cleanly(data: bytes) -> None:
    with pytest.raises(SimError):
        parse_launch_record(data)
