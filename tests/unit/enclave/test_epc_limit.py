"""The EPC budget setting of an enclave container."""

from __future__ import annotations

import pytest

from inclavare.enclave.config import EnclaveConfigError, resolve_enclave


def config(env: list[str], annotations: dict[str, str] | None = None) -> dict[str, object]:
    return {"process": {"env": env}, "annotations": annotations or {}}


@pytest.mark.parametrize(
    ("env", "annotations", "expected"),
    [
        (["ENCLAVE_TYPE=sim"], {}, None),
        (["ENCLAVE_TYPE=sim", "ENCLAVE_EPC_LIMIT_MIB=64"], {}, 64),
        (["ENCLAVE_TYPE=sim", "INCLAVARE_EPC_LIMIT_MIB=32"], {}, 32),
        (["ENCLAVE_TYPE=sim"], {"enclave.epc.limit.mib": "16"}, 16),
        (
            ["ENCLAVE_TYPE=sim", "INCLAVARE_EPC_LIMIT_MIB=32", "ENCLAVE_EPC_LIMIT_MIB=64"],
            {"enclave.epc.limit.mib": "16"},
            64,
        ),
        (["ENCLAVE_TYPE=sim", "INCLAVARE_EPC_LIMIT_MIB=32"], {"enclave.epc.limit.mib": "16"}, 32),
    ],
)
def test_budget_sources(env: list[str], annotations: dict[str, str], expected: int | None) -> None:
    resolution = resolve_enclave(config(env, annotations))
    assert resolution.enclave is not None
    assert resolution.enclave.epc_limit_mib == expected
    assert not any(entry.startswith("ENCLAVE_") for entry in resolution.env)
    assert resolution.warnings == []


def test_alias_stays_visible_to_the_payload() -> None:
    resolution = resolve_enclave(config(["ENCLAVE_TYPE=sim", "INCLAVARE_EPC_LIMIT_MIB=8"]))
    assert resolution.env == ["INCLAVARE_EPC_LIMIT_MIB=8"]


def test_ordinary_container_ignores_the_alias() -> None:
    assert resolve_enclave(config(["INCLAVARE_EPC_LIMIT_MIB=8"])).enclave is None


@pytest.mark.parametrize("value", ["x", "0", "-1", " 5", "5MiB", "١٢", "1099511627777"])
def test_bad_budget(value: str) -> None:
    with pytest.raises(EnclaveConfigError, match=r"invalid enclave EPC limit .* whole number"):
        resolve_enclave(config(["ENCLAVE_TYPE=sim", f"ENCLAVE_EPC_LIMIT_MIB={value}"]))
