"""Enclave configuration of a container: environment over annotations, as upstream Inclavare."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inclavare.enclave.config import EnclaveConfig, EnclaveConfigError, resolve_enclave

from ..attestation.conftest import REPO_ROOT

PAL = "/usr/lib/liberpal-skeleton-v3.so"


def config(
    env: list[str] | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "ociVersion": "1.1.0",
        "process": {"args": ["/bin/app"], "env": ["PATH=/bin", "HOME=/root", *(env or [])]},
        "root": {"path": "rootfs"},
    }
    if annotations is not None:
        document["annotations"] = annotations
    return document


def no_sgx(path: str) -> bool:
    return False


def sgx_host(path: str) -> bool:
    return path in ("/dev/sgx_enclave", "/dev/sgx_provision")


# (description, env, annotations, expected enclave config)
RESOLVED = [
    ("ordinary container", [], None, None),
    ("enclave settings without a type", [f"ENCLAVE_RUNTIME_PATH={PAL}"], None, None),
    (
        "sim defaults to the native runtime",
        ["ENCLAVE_TYPE=sim"],
        None,
        EnclaveConfig("sim", "builtin:native"),
    ),
    (
        "all from the environment",
        [
            "ENCLAVE_TYPE=sim",
            f"ENCLAVE_RUNTIME_PATH={PAL}",
            "ENCLAVE_RUNTIME_ARGS=debug,a=b",
            "ENCLAVE_RUNTIME_LOGLEVEL=debug",
        ],
        None,
        EnclaveConfig("sim", PAL, ("debug", "a=b"), "debug"),
    ),
    (
        "all from annotations",
        [],
        {
            "enclave.type": "sim",
            "enclave.runtime.path": "builtin:wasm",
            "enclave.runtime.args": "x",
            "enclave.runtime.loglevel": "WARN",
        },
        EnclaveConfig("sim", "builtin:wasm", ("x",), "warning"),
    ),
    (
        "the environment wins",
        ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:native"],
        {
            "enclave.type": "intelSgx",
            "enclave.runtime.path": PAL,
            "enclave.runtime.args": "from-annotation",
        },
        EnclaveConfig("sim", "builtin:native", ("from-annotation",)),
    ),
    (
        "an empty value counts as absent",
        ["ENCLAVE_TYPE=", "ENCLAVE_RUNTIME_ARGS="],
        {"enclave.type": "sim", "enclave.runtime.args": "a"},
        EnclaveConfig("sim", "builtin:native", ("a",)),
    ),
    (
        "a later entry wins",
        ["ENCLAVE_TYPE=intelSgx", "ENCLAVE_TYPE=sim"],
        None,
        EnclaveConfig("sim", "builtin:native"),
    ),
    (
        "arguments keep empty items",
        ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_ARGS=a,,b"],
        None,
        EnclaveConfig("sim", "builtin:native", ("a", "", "b")),
    ),
]


@pytest.mark.parametrize(
    ("description", "env", "annotations", "expected"), RESOLVED, ids=[r[0] for r in RESOLVED]
)
def test_resolution(
    description: str,
    env: list[str],
    annotations: dict[str, str] | None,
    expected: EnclaveConfig | None,
) -> None:
    document = config(env, annotations)
    original = copy.deepcopy(document)
    resolution = resolve_enclave(document, path_exists=no_sgx)
    assert resolution.enclave == expected
    assert document == original  # the input is not changed
    if expected is None:
        assert resolution.env == document["process"]["env"]
    else:
        assert resolution.env == ["PATH=/bin", "HOME=/root"]


def test_every_enclave_variable_leaves_the_environment() -> None:
    resolution = resolve_enclave(
        config(
            ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PAHT=/x.so", "ENCLAVEX=kept", "A=ENCLAVE_TYPE"]
        ),
        path_exists=no_sgx,
    )
    assert resolution.env == ["PATH=/bin", "HOME=/root", "ENCLAVEX=kept", "A=ENCLAVE_TYPE"]
    assert resolution.warnings == ["unknown enclave setting ENCLAVE_RUNTIME_PAHT ignored"]


def test_unknown_annotations_are_warned_about() -> None:
    resolution = resolve_enclave(config([], {"enclave.type": "sim", "enclave.runtime.pth": "x"}))
    assert resolution.warnings == ["unknown enclave annotation enclave.runtime.pth ignored"]


def test_intel_sgx_on_a_host_with_sgx() -> None:
    resolution = resolve_enclave(
        config(["ENCLAVE_TYPE=intelSgx", f"ENCLAVE_RUNTIME_PATH={PAL}"]), path_exists=sgx_host
    )
    assert resolution.enclave == EnclaveConfig(
        "intelSgx", PAL, sgx_devices=("/dev/sgx_enclave", "/dev/sgx_provision")
    )


# (description, env, annotations, devices, message)
REFUSED = [
    (
        "unknown type",
        ["ENCLAVE_TYPE=tdx"],
        None,
        no_sgx,
        "unknown enclave type 'tdx' (ENCLAVE_TYPE); known types: sim, intelSgx",
    ),
    (
        "unknown type from annotation",
        [],
        {"enclave.type": "SGX"},
        no_sgx,
        "unknown enclave type 'SGX' (annotation enclave.type)",
    ),
    (
        "intelSgx without a device",
        ["ENCLAVE_TYPE=intelSgx", f"ENCLAVE_RUNTIME_PATH={PAL}"],
        None,
        no_sgx,
        "needs an SGX device (/dev/sgx_enclave or /dev/isgx) and this host has none",
    ),
    (
        "intelSgx without a PAL",
        ["ENCLAVE_TYPE=intelSgx"],
        None,
        sgx_host,
        "needs ENCLAVE_RUNTIME_PATH",
    ),
    (
        "intelSgx with a built-in runtime",
        ["ENCLAVE_TYPE=intelSgx", "ENCLAVE_RUNTIME_PATH=builtin:wasm"],
        None,
        sgx_host,
        "runs on the sim TEE only",
    ),
    (
        "unknown built-in",
        ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:python"],
        None,
        no_sgx,
        "unknown built-in enclave runtime 'builtin:python'",
    ),
    (
        "relative PAL path",
        ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=liberpal.so"],
        None,
        no_sgx,
        "must be the absolute host path of a PAL",
    ),
    (
        "unknown log level",
        ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_LOGLEVEL=loud"],
        None,
        no_sgx,
        "unknown enclave runtime log level 'loud' (ENCLAVE_RUNTIME_LOGLEVEL)",
    ),
]


@pytest.mark.parametrize(
    ("description", "env", "annotations", "devices", "message"),
    REFUSED,
    ids=[r[0] for r in REFUSED],
)
def test_refusals_name_the_problem(
    description: str, env: list[str], annotations: dict[str, str] | None, devices: Any, message: str
) -> None:
    with pytest.raises(EnclaveConfigError) as error:
        resolve_enclave(config(env, annotations), path_exists=devices)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"process": {"env": "ENCLAVE_TYPE=sim"}}, "process.env: must be a list of strings"),
        ({"process": []}, "process: must be an object"),
        ({"annotations": {"enclave.type": 1}}, "annotations: must map strings to strings"),
    ],
)
def test_malformed_configs(document: dict[str, Any], message: str) -> None:
    with pytest.raises(EnclaveConfigError, match=message):
        resolve_enclave(document)


def test_the_module_imports_nothing_heavy() -> None:
    """rune imports it on every create."""
    program = (
        "import sys\n"
        "import inclavare.enclave.config\n"
        "heavy = {'dataclasses', 'typing', 'cryptography', 'ctypes', 'inspect', 'json'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path[:0] = [{str(REPO_ROOT / 'src')!r}]\n{program}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


env_entries = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "ENCLAVE_TYPE=sim",
                "ENCLAVE_TYPE=intelSgx",
                "ENCLAVE_RUNTIME_PATH=builtin:wasm",
                f"ENCLAVE_RUNTIME_PATH={PAL}",
                "ENCLAVE_RUNTIME_ARGS=a,b",
                "ENCLAVE_RUNTIME_LOGLEVEL=debug",
            ]
        ),
        st.text(max_size=30),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    env=env_entries,
    annotations=st.dictionaries(
        st.sampled_from(["enclave.type", "enclave.runtime.path", "other"]),
        st.text(max_size=20),
        max_size=3,
    ),
)
def test_any_config_resolves_or_fails_cleanly(env: list[str], annotations: dict[str, str]) -> None:
    try:
        resolution = resolve_enclave({"process": {"env": env}, "annotations": annotations}, no_sgx)
    except EnclaveConfigError as error:
        assert "\n" not in str(error)
        return
    if resolution.enclave is None:
        assert resolution.env == env
    else:
        assert not any(entry.startswith("ENCLAVE_") for entry in resolution.env)
        assert resolution.enclave.type == "sim"  # no SGX device here
