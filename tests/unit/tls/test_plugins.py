"""Plugin classes: names, priorities, selection, unavailability and third-party plugins."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from inclavare.tls import endpoint as endpoint_module
from inclavare.tls.config import Config
from inclavare.tls.endpoint import EnclaveTls
from inclavare.tls.errors import ConfigurationError, PeerRejected, PluginUnavailable
from inclavare.tls.plugins import (
    ATTESTERS,
    CRYPTO_WRAPPERS,
    TLS_WRAPPERS,
    VERIFIERS,
    Attester,
    PluginOptions,
    Registry,
    Verifier,
)

from .conftest import SIM


def test_builtin_names_and_priorities() -> None:
    def table(registry: Registry) -> dict[str, int]:  # type: ignore[type-arg]
        return {name: plugin.priority for name, plugin in registry.plugins().items()}

    assert table(ATTESTERS) == {
        "sgx_ecdsa": 52,
        "tdx_ecdsa": 42,
        "snp": 42,
        "sim": 10,
        "nullattester": 0,
    }
    assert table(VERIFIERS) == {
        "sgx_ecdsa": 52,
        "tdx_ecdsa": 42,
        "snp": 42,
        "sgx_epid": 20,
        "sim": 10,
        "nullverifier": 0,
    }
    assert table(TLS_WRAPPERS) == {"openssl": 25, "nulltls": 0}
    assert table(CRYPTO_WRAPPERS) == {"openssl": 25, "nullcrypto": 0}


@pytest.mark.parametrize(
    ("name", "interface"),
    [("sgx_ecdsa", "/dev/attestation"), ("tdx_ecdsa", "/dev/tdx_guest"), ("snp", "/dev/sev-guest")],
)
def test_hardware_attesters_say_they_are_unavailable(
    tmp_path: Path, name: str, interface: str
) -> None:
    options = PluginOptions(
        tsm_report_dir=str(tmp_path / "tsm"),
        attestation_dir=str(tmp_path / "attestation"),
        tdx_guest_device=str(tmp_path / "tdx_guest"),
        sev_guest_device=str(tmp_path / "sev-guest"),
    )
    with pytest.raises(PluginUnavailable, match=f"^attester {name}: unavailable on this host: "):
        ATTESTERS.create(name, options)
    # A guest device without configfs-tsm is named as such.
    if name != "sgx_ecdsa":
        device = tmp_path / Path(interface).name
        device.touch()
        with pytest.raises(PluginUnavailable, match="exists but configfs-tsm"):
            ATTESTERS.create(name, options)
    else:
        (tmp_path / "attestation").mkdir()
        (tmp_path / "attestation" / "attestation_type").write_text("epid\n")
        with pytest.raises(PluginUnavailable, match="offers 'epid' attestation, not dcap"):
            ATTESTERS.create(name, options)


def test_gramine_attestation_files_give_a_quote(tmp_path: Path) -> None:
    root = tmp_path / "attestation"
    root.mkdir()
    (root / "attestation_type").write_text("dcap")
    (root / "quote").write_bytes(b"\x03\x00\x02\x00" + bytes(60))
    attester = ATTESTERS.create("sgx_ecdsa", PluginOptions(attestation_dir=str(root)))
    assert attester.collect_evidence(bytes(64)).startswith(b"\x03\x00\x02\x00")
    assert (root / "user_report_data").read_bytes() == bytes(64)


def test_selection_by_priority_falls_back_to_sim() -> None:
    tls = EnclaveTls(Config(allow_simulated=True), server=True)
    assert tls.attester_name == "sim"  # no hardware TEE here
    assert (
        tls.tls_wrapper.name == "openssl"
        and tls.crypto is not None
        and tls.crypto.name == "openssl"
    )


def test_unknown_and_incompatible_plugins() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown attester 'sgx_la' .known: sgx_ecdsa"):
        EnclaveTls(Config(attester="sgx_la"), server=True)
    with pytest.raises(ConfigurationError, match="unknown TLS wrapper 'wolfssl'"):
        EnclaveTls(Config(tls="wolfssl"), server=True)
    with pytest.raises(ConfigurationError, match="nullcrypto wrapper makes no keys"):
        EnclaveTls(replace(SIM, crypto="nullcrypto"), server=True)
    with pytest.raises(ConfigurationError, match="exchanges no certificate: use the nullattester"):
        EnclaveTls(replace(SIM, tls="nulltls"), server=True)
    from inclavare.attestation.policy import load_policy

    with pytest.raises(ConfigurationError, match="policy cannot be applied with the null verifier"):
        EnclaveTls(Config(verifier="nullverifier", policy=load_policy(b"")), server=False)


def test_verifier_follows_the_evidence_type_unless_enforced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = EnclaveTls(replace(SIM, session_evidence=False), server=False)
    assert client.verifier_for("sim").name == "sim"
    assert client.verifier_for("tdx_ecdsa").name == "tdx_ecdsa"
    assert client.verifier_for("snp").name == "snp"
    enforced = EnclaveTls(replace(SIM, verifier="sgx_ecdsa"), server=False)
    with pytest.raises(
        PeerRejected, match=r"^evidence type sim but the enforced verifier is sgx_ecdsa$"
    ):
        enforced.verifier_for("sim")
    # A registry without a TDX verifier: the reason says so.
    from inclavare.tls.plugins import verifiers

    partial = Registry(Verifier, lambda: [verifiers.SgxEcdsaVerifier, verifiers.SimVerifier])
    monkeypatch.setattr(endpoint_module, "VERIFIERS", partial)
    client = EnclaveTls(replace(SIM, session_evidence=False), server=False)
    with pytest.raises(PeerRejected, match=r"^evidence type tdx_ecdsa but no tdx_ecdsa verifier$"):
        client.verifier_for("tdx_ecdsa")


def test_third_party_plugins_register_through_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etls_extra.py").write_text(
        "from inclavare.tls.plugins.attesters import SimAttester\n"
        "class Custom(SimAttester):\n"
        "    name = 'custom'\n"
        "    priority = 99\n"
        "class Clash(SimAttester):\n"
        "    name = 'sim'\n"
    )
    info = tmp_path / "etls_extra-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: etls-extra\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[inclavare.tls.attesters]\n"
        "custom = etls_extra:Custom\n"
        "clash = etls_extra:Clash\n"
        "broken = etls_extra:Missing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from inclavare.tls.plugins import attesters

    registry: Registry[Attester] = Registry(Attester, lambda: list(attesters.BUILTIN))
    monkeypatch.setattr(endpoint_module, "ATTESTERS", registry)
    assert next(iter(registry.plugins())) == "custom"
    tls = EnclaveTls(SIM.__class__(allow_simulated=True), server=True)
    assert tls.attester_name == "custom"  # the highest priority that can run
    with pytest.raises(
        ConfigurationError, match="attester 'broken': cannot load etls_extra:Missing"
    ):
        registry.create("broken", PluginOptions())
    with pytest.raises(ConfigurationError, match="takes the name 'sim' already used"):
        registry.create("clash", PluginOptions())
    sys.modules.pop("etls_extra", None)
