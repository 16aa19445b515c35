"""The enclave configuration of a container, read from its OCI config as upstream Inclavare does.

A container is an enclave container when its process environment has ENCLAVE_TYPE or its
annotations have `enclave.type`. Each setting can come from either place; the environment
wins, and in an enclave container every ENCLAVE_* entry is removed from the environment the
payload sees:

    environment                 annotation                  meaning
    ENCLAVE_TYPE                enclave.type                sim | intelSgx
    ENCLAVE_RUNTIME_PATH        enclave.runtime.path        a PAL shared object on the host
                                                            (absolute path), builtin:wasm or
                                                            builtin:native (sim's default)
    ENCLAVE_RUNTIME_ARGS        enclave.runtime.args        comma-separated arguments
    ENCLAVE_RUNTIME_LOGLEVEL    enclave.runtime.loglevel    trace | debug | info (default) |
                                                            warning | error | fatal | panic
    ENCLAVE_EPC_LIMIT_MIB       enclave.epc.limit.mib       the enclave memory budget in MiB
                                                            (what the Kubernetes device plugin
                                                            allocated); rune limits the
                                                            container's memory cgroup to it

INCLAVARE_EPC_LIMIT_MIB in the environment is accepted for the budget too (after
ENCLAVE_EPC_LIMIT_MIB, before the annotation) and, not being an ENCLAVE_* entry, stays
visible to the payload.

An empty value counts as absent. `sim` (the software TEE) is always available; `intelSgx`
needs an SGX device on the host and a PAL. Without an enclave type, nothing changes: the
container is an ordinary one.

`resolve_enclave` is pure apart from asking whether the SGX device nodes exist; rune calls it
on every create, so this module imports nothing beyond the standard library's basics.
"""

from __future__ import annotations

import os

from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

ENV_PREFIX = "ENCLAVE_"
ANNOTATION_PREFIX = "enclave."
# setting -> (environment variable, annotation)
SOURCES = {
    "type": ("ENCLAVE_TYPE", "enclave.type"),
    "runtime_path": ("ENCLAVE_RUNTIME_PATH", "enclave.runtime.path"),
    "runtime_args": ("ENCLAVE_RUNTIME_ARGS", "enclave.runtime.args"),
    "log_level": ("ENCLAVE_RUNTIME_LOGLEVEL", "enclave.runtime.loglevel"),
    "epc_limit_mib": ("ENCLAVE_EPC_LIMIT_MIB", "enclave.epc.limit.mib"),
}
EPC_LIMIT_ALIAS = "INCLAVARE_EPC_LIMIT_MIB"
# 2**40 MiB: an exbibyte, far above any EPC, and still exact in the cgroup's byte counts.
MAX_EPC_LIMIT_MIB = 1 << 40

TYPE_SIM = "sim"
TYPE_INTEL_SGX = "intelSgx"
ENCLAVE_TYPES = (TYPE_SIM, TYPE_INTEL_SGX)
BUILTIN_WASM = "builtin:wasm"
BUILTIN_NATIVE = "builtin:native"
BUILTIN_RUNTIMES = (BUILTIN_WASM, BUILTIN_NATIVE)
LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "fatal", "panic")
DEFAULT_LOG_LEVEL = "info"

# Device nodes of the SGX drivers: the in-kernel driver, the DCAP driver, the legacy driver.
SGX_ENCLAVE_DEVICES = ("/dev/sgx_enclave", "/dev/sgx/enclave", "/dev/isgx")
SGX_DEVICES = (*SGX_ENCLAVE_DEVICES, "/dev/sgx_provision", "/dev/sgx/provision")
# Where the SGX architectural enclave service listens; bind it into intelSgx containers.
AESMD_SOCKET_DIRECTORY = "/var/run/aesmd"


class EnclaveConfigError(InclavareError):
    """The enclave configuration of the container is invalid or cannot be satisfied."""


class EnclaveConfig:
    """The enclave settings of a container."""

    __slots__ = (
        "epc_limit_mib",
        "log_level",
        "runtime_args",
        "runtime_path",
        "sgx_devices",
        "type",
    )

    def __init__(
        self,
        type: str,
        runtime_path: str,
        runtime_args: tuple[str, ...] = (),
        log_level: str = DEFAULT_LOG_LEVEL,
        sgx_devices: tuple[str, ...] = (),
        epc_limit_mib: int | None = None,
    ) -> None:
        self.type = type
        self.runtime_path = runtime_path
        self.runtime_args = runtime_args
        self.log_level = log_level
        # intelSgx: the SGX device nodes present on the host, to add to the container.
        self.sgx_devices = sgx_devices
        # The enclave memory budget in MiB; None: no budget beyond the spec's memory limit.
        self.epc_limit_mib = epc_limit_mib

    @property
    def builtin(self) -> bool:
        """Whether the runtime is built into rune (builtin:wasm, builtin:native)."""
        return self.runtime_path in BUILTIN_RUNTIMES

    @property
    def args_text(self) -> str:
        """The arguments as a PAL's pal_init receives them: comma separated."""
        return ",".join(self.runtime_args)

    def _fields(self) -> tuple[object, ...]:
        return (
            self.type,
            self.runtime_path,
            self.runtime_args,
            self.log_level,
            self.sgx_devices,
            self.epc_limit_mib,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnclaveConfig) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"EnclaveConfig(type={self.type!r}, runtime_path={self.runtime_path!r}, "
            f"runtime_args={self.runtime_args!r}, log_level={self.log_level!r}, "
            f"sgx_devices={self.sgx_devices!r}, epc_limit_mib={self.epc_limit_mib!r})"
        )


class Resolution:
    """The outcome for one container: its enclave settings (None for an ordinary container),
    the environment its process gets, and warnings about settings that were ignored."""

    __slots__ = ("enclave", "env", "warnings")

    def __init__(self, enclave: EnclaveConfig | None, env: list[str], warnings: list[str]) -> None:
        self.enclave = enclave
        self.env = env
        self.warnings = warnings


def resolve_enclave(
    config: Mapping[str, object], path_exists: Callable[[str], bool] = os.path.exists
) -> Resolution:
    """Read the enclave settings of the OCI `config` (config.json as a dict).

    The input is not changed. `path_exists` says whether a host path exists; it is only
    asked about SGX device nodes, for the intelSgx type.
    """
    env = _environment(config)
    annotations = _annotations(config)
    from_env = _env_settings(env)
    values: dict[str, tuple[str, str]] = {}  # setting -> (value, where it came from)
    alias = _alias(env)
    for setting, (variable, annotation) in SOURCES.items():
        if from_env.get(variable):
            values[setting] = (from_env[variable], variable)
        elif setting == "epc_limit_mib" and alias:
            values[setting] = (alias, EPC_LIMIT_ALIAS)
        elif annotations.get(annotation):
            values[setting] = (annotations[annotation], f"annotation {annotation}")

    if "type" not in values:
        return Resolution(None, list(env), [])

    warnings = [
        f"unknown enclave setting {name} ignored"
        for name in sorted(from_env)
        if name not in {variable for variable, _ in SOURCES.values()}
    ]
    warnings += [
        f"unknown enclave annotation {name} ignored"
        for name in sorted(annotations)
        if name.startswith(ANNOTATION_PREFIX)
        and name not in {annotation for _, annotation in SOURCES.values()}
    ]
    enclave_type = _enclave_type(*values["type"])
    runtime_path = _runtime_path(enclave_type, values.get("runtime_path"))
    args_text = values.get("runtime_args", ("", ""))[0]
    runtime_args = tuple(args_text.split(",")) if args_text else ()
    log_level = _log_level(values.get("log_level"))
    sgx_devices: tuple[str, ...] = ()
    if enclave_type == TYPE_INTEL_SGX:
        if not any(path_exists(device) for device in SGX_ENCLAVE_DEVICES):
            raise EnclaveConfigError(
                "enclave type intelSgx needs an SGX device (/dev/sgx_enclave or /dev/isgx) "
                "and this host has none; ENCLAVE_TYPE=sim runs the software TEE instead"
            )
        sgx_devices = tuple(device for device in SGX_DEVICES if path_exists(device))
    epc_limit_mib = _epc_limit(values.get("epc_limit_mib"))
    payload_env = [entry for entry in env if not _name(entry).startswith(ENV_PREFIX)]
    enclave = EnclaveConfig(
        enclave_type, runtime_path, runtime_args, log_level, sgx_devices, epc_limit_mib
    )
    return Resolution(enclave, payload_env, warnings)


def _name(entry: str) -> str:
    return entry.partition("=")[0]


def _environment(config: Mapping[str, object]) -> list[str]:
    process = config.get("process")
    if process is None:
        return []
    if not isinstance(process, dict):
        raise EnclaveConfigError("config.json: process: must be an object")
    env = process.get("env", [])
    if env is None:
        return []
    if not isinstance(env, list) or not all(isinstance(entry, str) for entry in env):
        raise EnclaveConfigError("config.json: process.env: must be a list of strings")
    return env


def _annotations(config: Mapping[str, object]) -> dict[str, str]:
    annotations = config.get("annotations")
    if annotations is None:
        return {}
    if not isinstance(annotations, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in annotations.items()
    ):
        raise EnclaveConfigError("config.json: annotations: must map strings to strings")
    return annotations


def _env_settings(env: list[str]) -> dict[str, str]:
    """ENCLAVE_* variables of the environment; a later entry overrides an earlier one."""
    settings: dict[str, str] = {}
    for entry in env:
        name, separator, value = entry.partition("=")
        if separator and name.startswith(ENV_PREFIX):
            settings[name] = value
    return settings


def _alias(env: list[str]) -> str:
    """The last non-empty INCLAVARE_EPC_LIMIT_MIB of the environment."""
    found = ""
    for entry in env:
        name, separator, value = entry.partition("=")
        if separator and name == EPC_LIMIT_ALIAS:
            found = value
    return found


def _epc_limit(given: tuple[str, str] | None) -> int | None:
    if given is None:
        return None
    value, source = given
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_EPC_LIMIT_MIB:
        raise EnclaveConfigError(
            f"invalid enclave EPC limit {value[:40]!r} ({source}): a whole number of MiB "
            f"between 1 and {MAX_EPC_LIMIT_MIB}"
        )
    return int(value)


def _enclave_type(value: str, source: str) -> str:
    if value not in ENCLAVE_TYPES:
        raise EnclaveConfigError(
            f"unknown enclave type {value!r} ({source}); known types: {', '.join(ENCLAVE_TYPES)}"
        )
    return value


def _runtime_path(enclave_type: str, given: tuple[str, str] | None) -> str:
    if given is None:
        if enclave_type == TYPE_SIM:
            return BUILTIN_NATIVE
        raise EnclaveConfigError(
            f"enclave type {enclave_type} needs ENCLAVE_RUNTIME_PATH (or annotation "
            "enclave.runtime.path): the host path of its PAL"
        )
    path, source = given
    if path.startswith("builtin:"):
        if path not in BUILTIN_RUNTIMES:
            raise EnclaveConfigError(
                f"unknown built-in enclave runtime {path!r} ({source}); known: "
                f"{', '.join(BUILTIN_RUNTIMES)}"
            )
        if enclave_type != TYPE_SIM:
            raise EnclaveConfigError(
                f"the built-in runtime {path} runs on the sim TEE only, not on {enclave_type}"
            )
        return path
    if not path.startswith("/"):
        raise EnclaveConfigError(
            f"enclave runtime path {path!r} ({source}) must be the absolute host path of a PAL "
            f"shared object, or one of {', '.join(BUILTIN_RUNTIMES)}"
        )
    return path


def _log_level(given: tuple[str, str] | None) -> str:
    if given is None:
        return DEFAULT_LOG_LEVEL
    value, source = given
    level = value.lower()
    if level == "warn":
        level = "warning"
    if level not in LOG_LEVELS:
        raise EnclaveConfigError(
            f"unknown enclave runtime log level {value!r} ({source}); known: "
            f"{', '.join(LOG_LEVELS)}"
        )
    return level
