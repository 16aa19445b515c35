"""`shelter mrverify`: reference values of sim enclave images and bundles, from their files
alone, checked against their signature, and written as an attestation policy.

(In tests/unit/enclave for the session-wide signing keys of the sim TEE's fixtures.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inclavare.attestation.policy import load_policy
from inclavare.cli.shelter import main as shelter
from inclavare.enclave.convert import convert_bundle, convert_image
from inclavare.oci.image import Layout, build_layer, write_layout
from inclavare.tee.sim.files import SIGNATURE_PATH
from tests.unit.oci.layouts import directory, file, make_layout, symlink

PROGRAM = b"\x7fELF a program"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = shelter(["mrverify", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def as_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code, out, err = run([*argv, "--json"], capsys)
    assert out, err
    document: dict[str, Any] = json.loads(out)
    return code, document


@pytest.fixture
def image(tmp_path: Path) -> Path:
    layout = tmp_path / "image"
    make_layout(
        layout,
        [
            [directory("bin"), file("bin/busybox", PROGRAM, 0o755), symlink("bin/sh", "busybox")],
            [file("etc/motd", "hello\n"), file("etc/passwd", "root:x:0:0::/:/bin/sh\n")],
        ],
        config={"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        tag="v1",
    )
    return layout


@pytest.fixture
def key_file(tmp_path: Path, signing_key: bytes) -> Path:
    path = tmp_path / "signing.pem"
    path.write_bytes(signing_key)
    return path


def public_forms(signing_key: bytes, directory_path: Path) -> dict[str, Path]:
    """The signing key's public key (PEM, DER) and a self-signed certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key: Any = serialization.load_pem_private_key(signing_key, None)
    public = key.public_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enclave signer")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    forms = {
        "public.pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "public.der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "certificate.pem": certificate.public_bytes(serialization.Encoding.PEM),
        "private.pem": signing_key,
    }
    paths = {}
    for file_name, data in forms.items():
        paths[file_name] = directory_path / file_name
        paths[file_name].write_bytes(data)
    return paths


def test_a_converted_image_gives_its_signed_values_and_a_policy(
    image: Path, tmp_path: Path, signing_key: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    conversion = convert_image(
        image, "v1", image, "enclave", trusted=["/etc"], key_pem=signing_key, isv_svn=5
    )
    policy_path = tmp_path / "policy.toml"
    code, out, _ = run(["--image", f"{image}:enclave", "--policy-out", str(policy_path)], capsys)
    assert code == 0
    assert "simulated TEE (sim)" in out
    assert f"MRENCLAVE    {conversion.mr_enclave.hex()}" in out
    assert "allow_simulated = false" in out
    assert "CONSISTENT" in out
    policy = load_policy(policy_path.read_bytes(), str(policy_path))
    rules = policy.rules_for("sim")
    assert rules["mrenclave"] == {conversion.mr_enclave.hex()}
    assert rules["mrsigner"] == {conversion.mr_signer.hex()}
    assert rules["min_isv_svn"] == 5 and rules["isv_prod_id"] == {0}
    assert rules["allow_debug"] is False and policy.allow_simulated is False

    json_policy = tmp_path / "policy.json"
    code, document = as_json(
        ["--image", f"{image}:enclave", "--policy-out", str(json_policy), "--allow-sim"], capsys
    )
    assert code == 0
    assert document["mrenclave"] == conversion.mr_enclave.hex()
    assert document["isv_svn"] == 5 and document["debug"] is False
    assert document["simulated"] is True and document["consistent"] is True
    assert document["policy"] == {"path": str(json_policy), "allow_simulated": True}
    assert load_policy(json_policy.read_bytes(), str(json_policy)).allow_simulated is True


def test_an_unsigned_image_measures_as_its_conversion_will(
    image: Path, signing_key: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    code, document = as_json(["--image", f"{image}:v1", "--trusted", "/etc"], capsys)
    assert code == 0
    assert document["signed"] is False and document["mrsigner"] is None
    conversion = convert_image(image, "v1", image, "enclave", trusted=["/etc"], key_pem=signing_key)
    assert document["mrenclave"] == conversion.mr_enclave.hex()
    assert [file["path"] for file in document["files"]] == ["/bin/sh", "/etc/motd", "/etc/passwd"]


def test_a_tampered_image_disagrees_with_its_signature(
    image: Path, tmp_path: Path, signing_key: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    convert_image(image, "v1", image, "enclave", trusted=["/etc"], key_pem=signing_key)
    signed = Layout.open(image).image("enclave")
    write_layout(signed, image, "tampered", build_layer({"/etc/motd": b"pwned\n"}))
    policy_path = tmp_path / "policy.toml"
    code, out, _ = run(["--image", f"{image}:tampered", "--policy-out", str(policy_path)], capsys)
    assert code == 1
    assert "MISMATCH: trusted file /etc/motd differs from the signed measurement" in out
    assert "policy       not written" in out
    assert not policy_path.exists()


@pytest.mark.parametrize("form", ["public.pem", "public.der", "certificate.pem", "private.pem"])
def test_mrsigner_from_the_signers_key(
    image: Path,
    tmp_path: Path,
    signing_key: bytes,
    capsys: pytest.CaptureFixture[str],
    form: str,
) -> None:
    conversion = convert_image(image, "v1", image, "enclave", key_pem=signing_key)
    key = public_forms(signing_key, tmp_path)[form]
    code, document = as_json(["--image", f"{image}:v1", "--key", str(key)], capsys)
    assert code == 0 and document["mrsigner"] == conversion.mr_signer.hex()
    code, document = as_json(["--image", f"{image}:enclave", "--key", str(key)], capsys)
    assert code == 0 and document["key_mrsigner"] == document["mrsigner"]


def test_a_signature_by_another_key_is_named(
    image: Path,
    tmp_path: Path,
    signing_key: bytes,
    other_signing_key: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    convert_image(image, "v1", image, "enclave", key_pem=other_signing_key)
    key = public_forms(signing_key, tmp_path)["public.pem"]
    code, out, _ = run(["--image", f"{image}:enclave", "--key", str(key)], capsys)
    assert code == 1
    assert "not by --key" in out


def test_a_bundle_and_its_tampering(
    tmp_path: Path, key_file: Path, signing_key: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    (bundle / "rootfs" / "bin" / "app").write_bytes(PROGRAM)
    config = {"root": {"path": "rootfs"}, "process": {"args": ["/bin/app"], "env": []}}
    (bundle / "config.json").write_text(json.dumps(config))
    conversion = convert_bundle(bundle, key_pem=signing_key)
    code, document = as_json(["--bundle", str(bundle), "--key", str(key_file)], capsys)
    assert code == 0
    assert document["mrenclave"] == conversion.mr_enclave.hex()
    assert document["runtime_path"] == "builtin:native"
    code, _, _ = run(["--bundle", str(bundle), "--runtime", "builtin:wasm"], capsys)
    assert code == 1  # signed for native, asked about wasm
    (bundle / "rootfs" / "bin" / "app").write_bytes(PROGRAM + b"!")
    code, out, _ = run(["--bundle", str(bundle)], capsys)
    assert code == 1 and "trusted file /bin/app differs" in out
    (bundle / "rootfs" / SIGNATURE_PATH).write_bytes(b"INCLAVARE-SIGN-1 but short")
    code, out, err = run(["--bundle", str(bundle)], capsys)
    assert code == 1 and "signature file /.inclavare/enclave.sig is malformed" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--image", "{image}:nope"], "no image tagged 'nope'"),
        (["--image", "{tmp}"], "is not an OCI image layout"),
        (["--bundle", "{tmp}"], "cannot read"),
        (["--image", "{image}:v1", "--key", "{tmp}/missing.pem"], "cannot read --key"),
        (["--image", "{image}:v1", "--key", "{image}/index.json"], "not a public key"),
        (["--image", "{image}:v1", "--key", "{rsa2048}"], "RSA-2048 with exponent 65537"),
        (["--image", "{image}:v1", "--trusted", "/nothing"], "/nothing is missing"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    image: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa2048 = tmp_path / "rsa2048.pem"
    rsa2048.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    names = {"image": image, "tmp": tmp_path, "rsa2048": rsa2048}
    code, out, err = run([word.format(**names) for word in argv], capsys)
    assert code == 2, out
    assert message in err and len(err.strip().splitlines()) == 1
