"""What rune-sign-server agrees to sign, and the carrier config loader, under random input."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from inclavare.shim.config import ConfigError, parse
from inclavare.shim.sign_server import MATERIAL_SIZE, check_material
from inclavare.tee.sim.measurement import Manifest, RuntimeIdentity
from inclavare.tee.sim.sigstruct import SIGSTRUCT_SIZE, sign_enclave_with


def signed_material() -> bytes:
    """The material sign_enclave_with hands its signer."""
    seen: list[bytes] = []

    def signer(material: bytes) -> tuple[bytes, int]:
        seen.append(material)
        raise RuntimeError("only the material is wanted")

    manifest = Manifest.of(RuntimeIdentity.for_runtime_path("builtin:native"), [])
    try:
        sign_enclave_with(signer, manifest, isv_prod_id=7, isv_svn=3, debug=True)
    except RuntimeError:
        pass
    return seen[0]


def test_a_sigstructs_material_is_accepted() -> None:
    material = signed_material()
    assert len(material) == MATERIAL_SIZE < SIGSTRUCT_SIZE
    check_material(material)


@given(st.binary(max_size=300))
def test_random_bytes_are_refused(data: bytes) -> None:
    try:
        check_material(data)
    except ValueError as error:
        assert "\n" not in str(error)
    else:
        material = signed_material()
        assert data[:16] == material[:16] and data[24:40] == material[24:40]


@given(st.integers(0, MATERIAL_SIZE - 1), st.integers(1, 255))
def test_a_changed_constant_or_reserved_byte_is_refused(offset: int, value: int) -> None:
    material = bytearray(signed_material())
    material[offset] ^= value
    constant = offset < 20 or 24 <= offset < 40 or 44 <= offset < 128
    reserved = 136 <= offset < 156 or 220 <= offset < 252
    if constant or reserved:
        try:
            check_material(bytes(material))
        except ValueError:
            return
        raise AssertionError(f"byte {offset} changed and the material was accepted")
    check_material(bytes(material))  # a date, attributes, MRENCLAVE, ISV fields: signed as is


toml_values: Any = st.recursive(
    st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(
        st.sampled_from(
            [
                "log_level", "containerd", "socket", "enclave_runtime", "signature_method",
                "signature_server", "address", "ca", "pinned_key_sha256", "cache", "directory",
                "max_size", "accepted_signers", "timeout", "client_key", "other",
            ]
        ),
        children,
        max_size=4,
    ),
    max_leaves=12,
)  # fmt: skip


@given(
    st.dictionaries(st.sampled_from(["log_level", "containerd", "enclave_runtime"]), toml_values)
)
def test_the_loader_answers_any_document_with_a_config_or_one_line(table: dict[str, Any]) -> None:
    try:
        parse(table, "fuzz.toml")
    except ConfigError as error:
        assert str(error).startswith("fuzz.toml: ") and "\n" not in str(error)
