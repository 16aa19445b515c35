"""The container's filesystem: mounts and their options, devices, masked and read-only paths."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import Bundle, LeakCheck, Rune


def run_output(rune: Rune, bundle: Bundle, leaks: LeakCheck, script: str) -> str:
    bundle.set_args("sh", "-c", script).write()
    return rune("run", "-b", str(bundle.path), leaks.new_id()).stdout


def mount_options(mounts_text: str, destination: str) -> tuple[str, set[str]]:
    """(filesystem type, options) of the last mount on destination in /proc/mounts text."""
    found: tuple[str, set[str]] | None = None
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == destination:
            found = (fields[2], set(fields[3].split(",")))
    assert found is not None, f"{destination} is not mounted:\n{mounts_text}"
    return found


def test_default_mounts(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    mounts = run_output(rune, bundle, leaks, "cat /proc/mounts")
    assert mount_options(mounts, "/")[1] >= {"ro"}
    assert mount_options(mounts, "/proc")[0] == "proc"
    dev_type, dev_options = mount_options(mounts, "/dev")
    assert dev_type == "tmpfs" and {"nosuid", "mode=755", "size=65536k"} <= dev_options
    assert mount_options(mounts, "/dev/pts")[0] == "devpts"
    shm_type, shm_options = mount_options(mounts, "/dev/shm")
    assert shm_type == "tmpfs" and {"nosuid", "nodev", "noexec"} <= shm_options
    assert mount_options(mounts, "/dev/mqueue")[0] == "mqueue"
    sys_type, sys_options = mount_options(mounts, "/sys")
    assert sys_type == "sysfs" and "ro" in sys_options
    assert mount_options(mounts, "/sys/fs/cgroup")[1] >= {"ro", "nosuid"}


def test_cgroup_mount_shows_the_containers_own_cgroup(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    if not os.path.isdir("/sys/fs/cgroup/pids"):
        pytest.skip("the host has no cgroup v1 pids hierarchy")
    output = run_output(rune, bundle, leaks, "cat /sys/fs/cgroup/pids/cgroup.procs")
    assert output.split() == ["1"]  # only the container's own process is listed


def test_bind_mounts_with_options(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-host").write_text("hello\n")
    single = tmp_path / "single-file"
    single.write_text("one file\n")
    bundle.config["mounts"] += [
        {
            "destination": "/data",
            "type": "bind",
            "source": str(shared),
            "options": ["rbind", "ro", "nosuid", "nodev"],
        },
        {"destination": "/rw", "source": str(shared), "options": ["bind", "rw"]},
        {"destination": "/etc/one", "type": "bind", "source": str(single), "options": ["bind"]},
        {
            "destination": "/scratch",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["size=1m", "noexec", "mode=700"],
        },
    ]
    output = run_output(
        rune,
        bundle,
        leaks,
        "cat /data/from-host /etc/one; touch /data/x 2>/dev/null || echo data-is-ro;"
        " echo written > /rw/from-container; cat /proc/mounts",
    )
    lines = output.splitlines()
    assert lines[:3] == ["hello", "one file", "data-is-ro"]
    assert (shared / "from-container").read_text() == "written\n"
    assert mount_options(output, "/data")[1] >= {"ro", "nosuid", "nodev"}
    assert "rw" in mount_options(output, "/rw")[1]
    scratch_type, scratch_options = mount_options(output, "/scratch")
    assert scratch_type == "tmpfs" and {"noexec", "size=1024k", "mode=700"} <= scratch_options


def test_propagation_of_a_bind_mount(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    """A host mount made under an rslave bind mount after the container started is seen
    inside; nothing the container mounts is seen on the host."""
    source = tmp_path / "propagated"
    source.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(source)], check=True)
    subprocess.run(["mount", "--make-rshared", str(source)], check=True)
    try:
        bundle.config["root"]["readonly"] = False
        bundle.config["mounts"].append(
            {"destination": "/prop", "source": str(source), "options": ["rbind", "rslave"]}
        )
        container_id = leaks.new_id()
        bundle.set_args(
            "sh",
            "-c",
            "mkdir -p /tmp/inner && mount -t tmpfs none /tmp/inner; touch /tmp/ready;"
            " while [ ! -e /prop/late/marker ]; do sleep 0.05; done; echo seen > /tmp/result",
        )
        bundle.config["process"]["capabilities"] = None
        bundle.write()
        rune.detached("run", "-d", "-b", str(bundle.path), container_id, output=tmp_path / "o")
        ready = bundle.rootfs / "tmp" / "ready"
        for _ in range(250):
            if ready.exists():
                break
            subprocess.run(["sleep", "0.02"], check=True)
        late = source / "late"
        late.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "late", str(late)], check=True)
        (late / "marker").write_text("x")
        result = bundle.rootfs / "tmp" / "result"
        for _ in range(250):
            if result.exists():
                break
            subprocess.run(["sleep", "0.02"], check=True)
        assert result.read_text() == "seen\n"
        with open("/proc/self/mountinfo") as mountinfo:
            assert "/tmp/inner" not in mountinfo.read()
        rune("delete", "-f", container_id)
        subprocess.run(["umount", str(late)], check=True)
    finally:
        subprocess.run(["umount", "-R", str(source)], check=False)


def test_default_devices(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    output = run_output(
        rune,
        bundle,
        leaks,
        "for d in null zero full random urandom tty; do stat -c '%n %t:%T %a' /dev/$d; done;"
        " for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done;"
        " echo data > /dev/null; head -c 4 /dev/zero | wc -c",
    )
    lines = output.splitlines()
    assert lines[:6] == [
        "/dev/null 1:3 666",
        "/dev/zero 1:5 666",
        "/dev/full 1:7 666",
        "/dev/random 1:8 666",
        "/dev/urandom 1:9 666",
        "/dev/tty 5:0 666",
    ]
    assert lines[6:11] == [
        "/proc/self/fd",
        "/proc/self/fd/0",
        "/proc/self/fd/1",
        "/proc/self/fd/2",
        "pts/ptmx",
    ]
    assert lines[11].strip() == "4"


def test_devices_from_the_spec(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.config["linux"]["devices"] = [
        {
            "path": "/dev/fuse-like",
            "type": "c",
            "major": 10,
            "minor": 229,
            "fileMode": 0o640,
            "uid": 0,
            "gid": 5,
        },
        {"path": "/dev/sub/kmsg", "type": "c", "major": 1, "minor": 11},
    ]
    output = run_output(
        rune, bundle, leaks, "stat -c '%n %t:%T %a %g' /dev/fuse-like /dev/sub/kmsg"
    )
    assert output.splitlines() == ["/dev/fuse-like a:e5 640 5", "/dev/sub/kmsg 1:b 666 0"]


def test_masked_and_readonly_paths(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    output = run_output(
        rune,
        bundle,
        leaks,
        "wc -c < /proc/keys; ls /sys/firmware | wc -l;"
        " echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || echo proc-sys-ro;"
        " grep ' /proc/sys ' /proc/mounts",
    )
    lines = output.splitlines()
    assert lines[0].strip() == "0"  # /dev/null bound over /proc/keys
    assert lines[1].strip() == "0"  # an empty tmpfs over /sys/firmware
    assert lines[2] == "proc-sys-ro"
    assert "ro," in lines[3]


def test_root_readonly_and_writable(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    assert "ro-root" in run_output(rune, bundle, leaks, "touch /x 2>/dev/null || echo ro-root")
    bundle.config["root"]["readonly"] = False
    run_output(rune, bundle, leaks, "touch /made-by-container")
    assert (bundle.rootfs / "made-by-container").exists()


def test_sysctl(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456"}
    output = run_output(
        rune, bundle, leaks, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax"
    )
    assert output.split() == ["1", "123456"]
    with open("/proc/sys/kernel/shmmax") as host:
        assert host.read().strip() != "123456"


def test_no_pivot(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.set_args("sh", "-c", "ls /; cat /proc/self/mountinfo | head -1").write()
    result = rune("run", "--no-pivot", "-b", str(bundle.path), leaks.new_id())
    assert "busybox" not in result.stdout.split("\n")[0]
    assert "bin" in result.stdout.split()


def test_cwd_is_created(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    bundle.config["process"]["cwd"] = "/work/dir"
    assert run_output(rune, bundle, leaks, "pwd").strip() == "/work/dir"


@pytest.mark.parametrize(
    ("propagation", "tag"),
    [("shared", "shared:"), ("unbindable", "unbindable"), ("private", None), ("slave", None)],
)
def test_root_propagation(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, propagation: str, tag: str | None
) -> None:
    bundle.config["linux"]["rootfsPropagation"] = propagation
    line = run_output(rune, bundle, leaks, "awk '$5 == \"/\"' /proc/self/mountinfo").strip()
    optional = line.split(" - ")[0].split()[6:]
    if tag is None:
        assert not any(field.startswith(("shared:", "unbindable")) for field in optional)
    else:
        assert any(field.startswith(tag) for field in optional), line
