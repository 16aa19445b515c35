"""Real containers, as root: bundles built from busybox-static, a private state root per
test, and a check, after every test, that nothing was left behind on the host."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.oci.default_spec import default_spec

BUSYBOX = "/bin/busybox"


def rune_path() -> str:
    configured = os.environ.get("RUNE")
    if configured:
        return configured
    found = shutil.which("rune")
    return found or "/usr/local/bin/rune"


@pytest.fixture(scope="session", autouse=True)
def _requirements() -> None:
    if os.geteuid() != 0:
        pytest.skip("integration tests run real containers and need root")
    if not os.access(rune_path(), os.X_OK):
        pytest.skip(f"rune is not installed at {rune_path()}: run `make install`")
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed: run `make install`")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal root filesystem: busybox and its applets, /etc/passwd and /etc/group."""
    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    for directory in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/user"):
        (root / directory).mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run(
        [BUSYBOX, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nuser:x:1000:\ntty:x:5:\n")
    (root / "tmp").chmod(0o1777)
    return root


class Bundle:
    """A bundle directory whose config.json the test edits through `config`."""

    def __init__(self, path: Path, rootfs: Path) -> None:
        self.path = path
        self.rootfs = rootfs
        self.config: dict[str, Any] = copy.deepcopy(default_spec())
        self.config["process"]["terminal"] = False
        self.config["process"]["args"] = ["true"]

    def write(self) -> None:
        (self.path / "config.json").write_text(json.dumps(self.config, indent=2))

    def set_args(self, *args: str) -> Bundle:
        self.config["process"]["args"] = list(args)
        return self


@pytest.fixture
def bundle(tmp_path: Path, busybox_rootfs: Path) -> Bundle:
    """A bundle whose rootfs is a private copy (tests may change it)."""
    path = tmp_path / "bundle"
    path.mkdir()
    rootfs = path / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    return Bundle(path, rootfs)


class Rune:
    """Runs the installed rune with a private --root, as containerd would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.program = rune_path()

    def command(self, *args: str, log: Path | None = None) -> list[str]:
        command = [self.program, "--root", str(self.root)]
        if log is not None:
            command += ["--log", str(log), "--log-format", "json"]
        return [*command, *args]

    def __call__(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 30,
        stdin: int | None = subprocess.DEVNULL,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[str]:
        """Run rune and capture its output. Not for `create` or `run -d`: the container
        keeps rune's standard streams open, so capturing them would wait for it to exit."""
        result = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=stdin,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"rune {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def detached(
        self, *args: str, output: Path, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """`create` or `run -d`: the container keeps rune's standard streams, so they go to
        files (output, and output.err for standard error), not to pipes that would stay
        open as long as the container runs."""
        errors = output.with_name(output.name + ".err")
        with open(output, "ab") as sink, open(errors, "wb") as error_sink:
            result = subprocess.run(
                self.command(*args),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=error_sink,
                timeout=timeout,
            )
        completed = subprocess.CompletedProcess(
            result.args, result.returncode, "", errors.read_text()
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"rune {' '.join(args)} exited {result.returncode}: {completed.stderr.strip()}"
            )
        return completed

    def state(self, container_id: str) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self("state", container_id).stdout)
        return state

    def wait_for_status(self, container_id: str, status: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.state(container_id)["status"] != status:
            if time.monotonic() > deadline:
                raise AssertionError(f"container {container_id} never became {status}")
            time.sleep(0.02)


def own_cgroup_dirs(container_id: str) -> list[str]:
    """Where rune's default cgroup (<id> under the caller's cgroup) would be."""
    directories = []
    with open("/proc/self/cgroup") as cgroups:
        for line in cgroups:
            _, key, path = line.strip().split(":", 2)
            if key == "":
                base = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else ""
                base = base or "/sys/fs/cgroup"
            elif key.startswith("name="):
                base = f"/sys/fs/cgroup/{key[5:]}"
            else:
                base = f"/sys/fs/cgroup/{key.split(',')[0]}"
            directories.append(f"{base}{path.rstrip('/')}/{container_id}")
    return directories


def processes_rooted_in(path: Path) -> list[int]:
    """Processes whose root directory is inside path (what a container leaves running)."""
    found = []
    target = str(path)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            root = os.readlink(f"/proc/{entry}/root")
            with open(f"/proc/{entry}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if root.startswith(target) and state != "Z":
            found.append(int(entry))
    return found


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return [line for line in mountinfo if str(path) in line.split()[4]]


class LeakCheck:
    """What a container may leave on the host: state, cgroups, processes, mounts."""

    def __init__(self, rune: Rune, bundle_dir: Path) -> None:
        self.rune = rune
        self.bundle_dir = bundle_dir
        self.ids: list[str] = []

    def new_id(self) -> str:
        container_id = f"t{uuid.uuid4().hex[:10]}"
        self.ids.append(container_id)
        return container_id

    def leftovers(self, container_id: str) -> list[str]:
        found = []
        if (self.rune.root / container_id).exists():
            found.append(f"state directory {self.rune.root / container_id}")
        found += [f"cgroup {d}" for d in own_cgroup_dirs(container_id) if os.path.exists(d)]
        found += [f"process {pid}" for pid in processes_rooted_in(self.bundle_dir)]
        found += [f"mount {line.split()[4]}" for line in mounts_under(self.bundle_dir)]
        return found

    def assert_clean(self, container_id: str) -> None:
        leftovers = self.leftovers(container_id)
        assert not leftovers, f"left behind: {leftovers}"


@pytest.fixture
def rune(tmp_path: Path) -> Rune:
    return Rune(tmp_path / "state")


@pytest.fixture
def leaks(rune: Rune, bundle: Bundle) -> Iterator[LeakCheck]:
    """Gives container ids; after the test, deletes what remains and checks the host."""
    check = LeakCheck(rune, bundle.path)
    yield check
    for container_id in check.ids:
        if (rune.root / container_id).exists():
            rune("delete", "--force", container_id, check=False)
    for container_id in check.ids:
        check.assert_clean(container_id)
