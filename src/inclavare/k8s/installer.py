"""The node installer: puts rune, the containerd shim and the other programs on a Kubernetes
node and adds the `rune` runtime to containerd's configuration, or takes them away again.

The configuration is edited as text, not re-serialised, so that the operator's comments,
layout and every other setting stay as they were: the runtime is one block at the end of
config.toml between two marker comments, which an install replaces and an uninstall removes.
Before anything is written the result is parsed again and compared with the original: it
must differ exactly by the `rune` runtime table. A runtime named `rune` that the installer
did not write is left alone and the install refused. Running install twice leaves the same
file; each change is written atomically (a temporary file renamed over the old one) after a
copy of the old file is kept beside it.

containerd's two configuration formats name the CRI plugin differently:

    version   containerd   the runtime's table
    2         1.x          plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rune
    3         2.x          plugins."io.containerd.cri.v1.runtime".containerd.runtimes.rune
    1 (none)  1.x, old     plugins.cri.containerd.runtimes.rune

The pure functions (`add_runtime`, `remove_runtime`) take and return the text of the file;
`Installer` does the file system work under a host root (the node's / mounted in the
installer's container).
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Callable, Sequence
from typing import Any

from inclavare.errors import InclavareError

RUNTIME_NAME = "rune"
RUNTIME_TYPE = "io.containerd.rune.v2"
SHIM_PATH = "/usr/local/bin/containerd-shim-rune-v2"
RUNE_PATH = "/usr/local/bin/rune"
# Annotations the CRI plugin passes from the pod and the container (the device plugin's
# Allocate annotations arrive as the latter) into the OCI spec rune reads.
PASSED_ANNOTATIONS = ("enclave.*",)
CRI_PLUGINS = {1: "cri", 2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}
BEGIN_MARK = "# BEGIN inclavare rune runtime: written by inclavare-node-installer"
END_MARK = "# END inclavare rune runtime"
CONFIG_PATH = "/etc/containerd/config.toml"
PAYLOAD_DIR = "/opt/inclavare"
BIN_DIR = "/usr/local/bin"
SIM_DIR = "/var/lib/inclavare/sim"
CONTAINERD_BINARIES = ("usr/bin/containerd", "usr/local/bin/containerd", "bin/containerd")
NODE_LABEL = "inclavare.io/rune"


class InstallerError(InclavareError):
    """The node cannot be configured as asked; nothing was changed."""


# --- containerd's config.toml, as text ----------------------------------------------------------


def runtime_table(version: int) -> tuple[str, ...]:
    """The key path of the rune runtime's table in a config of `version`."""
    return ("plugins", CRI_PLUGINS[version], "containerd", "runtimes", RUNTIME_NAME)


def runtime_settings() -> dict[str, Any]:
    return {
        "runtime_type": RUNTIME_TYPE,
        "runtime_path": SHIM_PATH,
        "pod_annotations": list(PASSED_ANNOTATIONS),
        "container_annotations": list(PASSED_ANNOTATIONS),
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(value)


def runtime_block(version: int) -> str:
    """The marked block the installer writes for a config of `version`."""
    header = ".".join(part if "." not in part else f'"{part}"' for part in runtime_table(version))
    lines = [BEGIN_MARK, f"[{header}]"]
    lines += [f"  {key} = {_toml_value(value)}" for key, value in runtime_settings().items()]
    lines.append(END_MARK)
    return "\n".join(lines) + "\n"


def parse(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InstallerError(f"{where} is not valid TOML: {error}") from None


def config_version(parsed: dict[str, Any], where: str) -> int:
    version = parsed.get("version", 1)
    if version not in CRI_PLUGINS:
        raise InstallerError(
            f"{where}: unknown containerd config version {version!r} (known: 1, 2, 3)"
        )
    return int(version)


def _lookup(parsed: dict[str, Any], path: Sequence[str]) -> Any:
    node: Any = parsed
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _without(parsed: dict[str, Any], path: Sequence[str]) -> dict[str, Any]:
    """`parsed` less the table at `path` and the tables that only existed to hold it."""
    if not path:
        return parsed
    result = dict(parsed)
    head, rest = path[0], path[1:]
    if head not in result:
        return result
    if rest:
        inner = _without(result[head], rest)
        if inner:
            result[head] = inner
        else:
            del result[head]
    else:
        del result[head]
    return result


_BLOCK = re.compile(
    rf"^{re.escape(BEGIN_MARK)}$.*?^{re.escape(END_MARK)}$\n?", re.MULTILINE | re.DOTALL
)


def strip_block(text: str) -> str:
    """`text` without the installer's block; the rest keeps its text, apart from the blank
    lines around the block."""
    match = _BLOCK.search(text)
    if match is None:
        return text
    parts = [text[: match.start()].rstrip("\n"), text[match.end() :].strip("\n")]
    kept = [part for part in parts if part.strip()]
    return "\n\n".join(kept) + "\n" if kept else ""


def add_runtime(text: str, where: str, empty_version: int | None = None) -> str:
    """The config `text` with the rune runtime; `empty_version` is the format for a file
    with nothing in it yet (the containerd the node runs decides)."""
    base = strip_block(text)
    parsed = parse(base, where)
    if base.strip():
        version = config_version(parsed, where)
        prefix = base.rstrip("\n") + "\n\n"
    else:
        if empty_version is None:
            raise InstallerError(f"{where} is empty and the containerd version is unknown")
        version = empty_version
        prefix = f"version = {version}\n\n"
    table = runtime_table(version)
    if _lookup(parsed, table) is not None:
        raise InstallerError(
            f"{where} already defines a runtime named {RUNTIME_NAME} that inclavare-node-installer "
            f"did not write ({'.'.join(table)}): remove it, then install again"
        )
    result = prefix + runtime_block(version)
    try:
        after: dict[str, Any] | None = tomllib.loads(result)
    except tomllib.TOMLDecodeError:
        after = None
    before = parse(prefix, where)
    if (
        after is None
        or _lookup(after, table) != runtime_settings()
        or _without(after, table) != _without(before, table)
    ):
        raise InstallerError(
            f"{where}: the rune runtime cannot be added as a table at the end of this file "
            "(it defines the runtimes in another form): add it by hand as in "
            "deploy/containerd/config.toml"
        )
    return result


def remove_runtime(text: str, where: str) -> str:
    """The config `text` without the installer's block; other settings stay as they are."""
    stripped = strip_block(text)
    if stripped != text:
        parse(stripped, f"{where} without the rune runtime")
    return stripped


# --- the node ----------------------------------------------------------------------------------


def atomic_write(path: str, text: str, mode: int = 0o644) -> None:
    directory = os.path.dirname(path) or "."
    temporary = os.path.join(directory, f".{os.path.basename(path)}.inclavare-tmp")
    with open(temporary, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def containerd_major(version_output: str) -> int:
    """containerd's major version from `containerd --version`."""
    for word in version_output.split():
        match = re.match(r"v?(\d+)\.(\d+)\.\d+", word)
        if match:
            return int(match.group(1))
    raise InstallerError(f"cannot tell containerd's version from {version_output.strip()!r}")


class Installer:
    """Installs on the node whose / is `host_root`."""

    def __init__(
        self,
        host_root: str = "/",
        config: str = CONFIG_PATH,
        payload: str | None = None,
        dry_run: bool = False,
        restart: Sequence[str] | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.host_root = os.path.abspath(host_root)
        self.config_name = config  # as the node sees it
        self.config = self.host(config)
        self.payload = payload
        self.dry_run = dry_run
        self.restart_command = list(restart) if restart else None
        self.say = say

    def host(self, path: str) -> str:
        return os.path.join(self.host_root, path.lstrip("/"))

    def _containerd_binary(self) -> str | None:
        for relative in CONTAINERD_BINARIES:
            candidate = os.path.join(self.host_root, relative)
            if os.access(candidate, os.X_OK):
                return candidate
        return None

    def _in_host(self, binary: str, *args: str) -> list[str]:
        """A command line running the node's `binary` (a path under the host root) in the
        node's root, so that it finds the node's libraries."""
        if self.host_root == "/":
            return [binary, *args]
        return ["chroot", self.host_root, "/" + os.path.relpath(binary, self.host_root), *args]

    def _check_with_containerd(self, binary: str | None, text: str) -> None:
        """Have the node's containerd read the new configuration (`config dump`) before it
        replaces the old one."""
        if binary is None:
            return
        check = f"{self.config}.inclavare-check"
        os.makedirs(os.path.dirname(check), exist_ok=True)
        with open(check, "w") as file:
            file.write(text)
        node_path = "/" + os.path.relpath(check, self.host_root)
        try:
            result = subprocess.run(
                self._in_host(binary, "--config", node_path, "config", "dump"),
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError) as error:
            raise InstallerError(f"cannot run the node's containerd to check: {error}") from None
        finally:
            os.unlink(check)
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
            raise InstallerError(
                f"the node's containerd refuses {self.config_name} with the change: {lines[-1]}"
            )

    def _empty_config_version(self, binary: str) -> int:
        command = self._in_host(binary, "--version")
        try:
            output = subprocess.run(
                command, capture_output=True, text=True, timeout=30, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError) as error:
            raise InstallerError(f"cannot run {binary} --version: {error}") from None
        return 3 if containerd_major(output) >= 2 else 2

    def _read_config(self) -> str:
        try:
            with open(self.config) as file:
                return file.read()
        except FileNotFoundError:
            return ""
        except OSError as error:
            raise InstallerError(f"cannot read {self.config_name}: {error.strerror}") from None

    def _write_config(self, old: str, new: str) -> bool:
        if new == old:
            self.say(f"{self.config_name}: unchanged")
            return False
        if self.dry_run:
            self.say(f"{self.config_name}: would be written as:\n{new}")
            return False
        os.makedirs(os.path.dirname(self.config), exist_ok=True)
        if os.path.exists(self.config):
            backup = f"{self.config}.inclavare-{time.strftime('%Y%m%dT%H%M%S')}.bak"
            shutil.copy2(self.config, backup)
            self.say(f"{self.config_name}: previous version kept in {os.path.basename(backup)}")
        atomic_write(self.config, new)
        self.say(f"{self.config_name}: written")
        return True

    def install(self) -> None:
        binary = self._containerd_binary()
        old = self._read_config()
        if binary is None and not old:
            raise InstallerError(
                f"no containerd on this node: neither {self.config_name} nor a containerd "
                f"program under {self.host_root} (looked in /usr/bin, /usr/local/bin, /bin)"
            )
        empty_version = self._empty_config_version(binary) if not old.strip() and binary else None
        new = add_runtime(old, self.config_name, empty_version)
        if new != old:
            self._check_with_containerd(binary, new)
        if self.payload is not None:
            self._install_payload(self.payload)
        self._make_sim_dir()
        if self._write_config(old, new):
            self._restart(old)

    def uninstall(self) -> None:
        old = self._read_config()
        new = remove_runtime(old, self.config_name)
        if new != old:
            self._check_with_containerd(self._containerd_binary(), new)
        if self._write_config(old, new):
            self._restart(old)
        self._remove_payload()

    # --- programs ----------------------------------------------------------------------------

    def _install_payload(self, payload: str) -> None:
        """Copy the payload (a tree with bin/ and what its programs need) to /opt/inclavare
        on the node and link each bin/ program into /usr/local/bin."""
        bin_dir = os.path.join(payload, "bin")
        if not os.path.isdir(bin_dir):
            raise InstallerError(f"the payload {payload} has no bin/ directory")
        interpreter = _venv_interpreter(payload)
        if interpreter is not None and not os.path.exists(self.host(interpreter)):
            raise InstallerError(
                f"the programs need {interpreter} (the Python of the installer's image) and "
                "this node has none: install that Python version on the node first"
            )
        target = self.host(PAYLOAD_DIR)
        if os.path.isdir(target) and not _differs(payload, target):
            self.say(f"{PAYLOAD_DIR}: unchanged")
        elif self.dry_run:
            self.say(f"{PAYLOAD_DIR}: would be copied from {payload}")
        else:
            staging = target + ".inclavare-new"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(payload, staging, symlinks=True)
            old = target + ".inclavare-old"
            shutil.rmtree(old, ignore_errors=True)
            if os.path.exists(target):
                os.rename(target, old)
            os.rename(staging, target)
            shutil.rmtree(old, ignore_errors=True)
            self.say(f"{PAYLOAD_DIR}: installed")
        for name in sorted(os.listdir(bin_dir)):
            link = self.host(os.path.join(BIN_DIR, name))
            destination = os.path.join(PAYLOAD_DIR, "bin", name)
            if os.path.islink(link) and os.readlink(link) == destination:
                continue
            if os.path.exists(link) and not os.path.islink(link):
                raise InstallerError(
                    f"{BIN_DIR}/{name} exists and is not the installer's: remove it first"
                )
            if self.dry_run:
                self.say(f"{BIN_DIR}/{name}: would link to {destination}")
                continue
            os.makedirs(os.path.dirname(link), exist_ok=True)
            temporary = link + ".inclavare-tmp"
            if os.path.lexists(temporary):
                os.unlink(temporary)
            os.symlink(destination, temporary)
            os.replace(temporary, link)
            self.say(f"{BIN_DIR}/{name} -> {destination}")

    def _remove_payload(self) -> None:
        bin_dir = self.host(os.path.join(PAYLOAD_DIR, "bin"))
        names = sorted(os.listdir(bin_dir)) if os.path.isdir(bin_dir) else []
        for name in names:
            link = self.host(os.path.join(BIN_DIR, name))
            if os.path.islink(link) and os.readlink(link).startswith(PAYLOAD_DIR + "/"):
                if self.dry_run:
                    self.say(f"{BIN_DIR}/{name}: would be removed")
                else:
                    os.unlink(link)
                    self.say(f"{BIN_DIR}/{name}: removed")
        target = self.host(PAYLOAD_DIR)
        if os.path.isdir(target):
            if self.dry_run:
                self.say(f"{PAYLOAD_DIR}: would be removed")
            else:
                shutil.rmtree(target)
                self.say(f"{PAYLOAD_DIR}: removed")
        # The sim platform's identity (its keys) stays: removing it would change what the
        # node's past quotes chain to; an operator removes /var/lib/inclavare by hand.

    def _make_sim_dir(self) -> None:
        """The sim TEE keeps its per-node identity here, made on first use: each node gets
        its own, so it is created empty and never copied from the image."""
        target = self.host(SIM_DIR)
        if os.path.isdir(target):
            return
        if self.dry_run:
            self.say(f"{SIM_DIR}: would be created")
            return
        os.makedirs(target, 0o700)
        os.chmod(target, 0o700)
        self.say(f"{SIM_DIR}: created")

    # --- containerd --------------------------------------------------------------------------

    def _restart(self, old: str) -> None:
        """Restart containerd with the new config; if it does not come back, put the old
        config back and restart again."""
        if self.restart_command is None:
            self.say("containerd not restarted (--no-restart): restart it to use the runtime")
            return
        if self._run_restart():
            self.say("containerd restarted")
            return
        if old:
            atomic_write(self.config, old)
        else:
            os.unlink(self.config)
        self._run_restart()
        raise InstallerError(
            f"containerd did not restart with the new {self.config_name}; the previous "
            "configuration was put back"
        )

    def _run_restart(self) -> bool:
        assert self.restart_command is not None
        try:
            result = subprocess.run(
                self.restart_command, capture_output=True, text=True, timeout=120
            )
        except (OSError, subprocess.SubprocessError) as error:
            self.say(f"restart command failed: {error}")
            return False
        if result.returncode != 0:
            self.say(f"restart command failed: {result.stderr.strip() or result.returncode}")
        return result.returncode == 0


def _venv_interpreter(payload: str) -> str | None:
    """The interpreter the payload's virtual environment is made over (venv/bin/python is a
    link to it): the node must have it at the same path."""
    python = os.path.join(payload, "venv", "bin", "python")
    if not os.path.islink(python):
        return None
    target = os.path.realpath(python)
    if target.startswith(os.path.realpath(payload) + "/"):
        return None  # a copied interpreter travels with the payload
    return target


def _differs(left: str, right: str) -> bool:
    comparison = filecmp.dircmp(left, right)
    return _tree_differs(comparison)


def _tree_differs(comparison: filecmp.dircmp[str]) -> bool:
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return True
    _, mismatch, errors = filecmp.cmpfiles(
        comparison.left, comparison.right, comparison.common_files, shallow=False
    )
    if mismatch or errors:
        return True
    return any(_tree_differs(sub) for sub in comparison.subdirs.values())
