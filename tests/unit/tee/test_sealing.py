"""Sealing: only the same enclave (or signer), on this platform, at this version or newer."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.tee.sim.errors import SealError, SimError
from inclavare.tee.sim.keys import POLICY_MRENCLAVE, POLICY_MRSIGNER
from inclavare.tee.sim.platform import SimPlatform
from inclavare.tee.sim.sealing import seal, unseal
from inclavare.tee.sim.sgx import FLAG_DEBUG, FLAG_INIT, FLAG_MODE64BIT, Attributes, EnclaveIdentity

ENCLAVE = EnclaveIdentity(
    mr_enclave=hashlib.sha256(b"enclave v1").digest(),
    mr_signer=hashlib.sha256(b"signer").digest(),
    attributes=Attributes(FLAG_INIT | FLAG_MODE64BIT),
    isv_prod_id=1,
    isv_svn=3,
)
NEXT_RELEASE = replace(ENCLAVE, mr_enclave=hashlib.sha256(b"enclave v2").digest(), isv_svn=4)
OTHER_SIGNER = replace(ENCLAVE, mr_signer=hashlib.sha256(b"another signer").digest())
SECRET = b"database password"


def test_the_same_enclave_unseals(platform: SimPlatform) -> None:
    blob = platform.seal(ENCLAVE, SECRET, additional_data=b"label")
    assert SECRET not in blob
    assert blob.startswith(b"INCLAVARE-SEAL-1")
    assert platform.unseal(ENCLAVE, blob, additional_data=b"label") == SECRET


def test_mrenclave_policy_refuses_any_other_enclave(platform: SimPlatform) -> None:
    blob = platform.seal(ENCLAVE, SECRET, POLICY_MRENCLAVE)
    for other in (NEXT_RELEASE, replace(ENCLAVE, isv_prod_id=2)):
        with pytest.raises(SealError, match="cannot unseal"):
            platform.unseal(other, blob)
    # As in SGX, the key of the MRENCLAVE policy does not involve the signer: the same code
    # signed by another key is the same enclave.
    assert platform.unseal(OTHER_SIGNER, blob) == SECRET


def test_mrsigner_policy_lets_a_newer_release_unseal(platform: SimPlatform) -> None:
    blob = platform.seal(ENCLAVE, SECRET, POLICY_MRSIGNER)
    assert platform.unseal(NEXT_RELEASE, blob) == SECRET
    with pytest.raises(SealError, match="sealed to another MRSIGNER"):
        platform.unseal(OTHER_SIGNER, blob)


def test_an_older_release_cannot_unseal_newer_data(platform: SimPlatform) -> None:
    blob = platform.seal(NEXT_RELEASE, SECRET, POLICY_MRSIGNER)
    with pytest.raises(SealError, match="sealed by ISVSVN 4; this enclave \\(ISVSVN 3\\)"):
        platform.unseal(ENCLAVE, blob)


def test_debug_and_production_enclaves_do_not_share_keys(platform: SimPlatform) -> None:
    debug = replace(ENCLAVE, attributes=Attributes(ENCLAVE.attributes.flags | FLAG_DEBUG))
    with pytest.raises(SealError):
        platform.unseal(debug, platform.seal(ENCLAVE, SECRET))


def test_another_platform_cannot_unseal(platform: SimPlatform) -> None:
    blob = platform.seal(ENCLAVE, SECRET)
    with pytest.raises(SealError):
        unseal(bytes(32), ENCLAVE, blob)
    with pytest.raises(SealError, match="other additional data"):
        platform.unseal(ENCLAVE, blob, additional_data=b"other")


def test_every_byte_of_a_sealed_blob_is_protected(platform: SimPlatform) -> None:
    blob = seal(platform.secret, ENCLAVE, SECRET)
    for position in range(len(blob)):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(SimError):
            unseal(platform.secret, ENCLAVE, bytes(tampered))


def test_unknown_policy_is_refused(platform: SimPlatform) -> None:
    with pytest.raises(SealError, match="unknown key policy 3"):
        platform.seal(ENCLAVE, SECRET, policy=3)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_arbitrary_blobs_fail_cleanly(data: bytes) -> None:
    for candidate in (data, b"INCLAVARE-SEAL-1" + data):
        with pytest.raises(SimError):
            unseal(bytes(32), ENCLAVE, candidate)
