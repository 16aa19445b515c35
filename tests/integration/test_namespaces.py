"""Each namespace the runtime-spec names: created new, or joined by path."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import Bundle, LeakCheck, Rune


def run_output(rune: Rune, bundle: Bundle, leaks: LeakCheck, script: str) -> str:
    bundle.set_args("sh", "-c", script).write()
    return rune("run", "-b", str(bundle.path), leaks.new_id()).stdout


def host_namespace(kind: str) -> str:
    return os.readlink(f"/proc/self/ns/{kind}")


@pytest.mark.parametrize(
    ("kind", "proc_name"),
    [
        ("pid", "pid"),
        ("network", "net"),
        ("ipc", "ipc"),
        ("uts", "uts"),
        ("mount", "mnt"),
        ("cgroup", "cgroup"),
        ("time", "time"),
    ],
)
def test_each_new_namespace_differs_from_the_host(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, kind: str, proc_name: str
) -> None:
    if not os.path.exists(f"/proc/self/ns/{proc_name}"):
        pytest.skip(f"this kernel has no {kind} namespace")
    namespaces = bundle.config["linux"]["namespaces"]
    if not any(ns["type"] == kind for ns in namespaces):
        namespaces.append({"type": kind})
    inside = run_output(rune, bundle, leaks, f"readlink /proc/self/ns/{proc_name}").strip()
    assert inside.startswith(f"{proc_name}:[")
    assert inside != host_namespace(proc_name)


def test_pid_namespace_makes_the_program_pid_1(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    output = run_output(rune, bundle, leaks, "echo $$; ps -o pid,comm; true").split("\n")
    assert output[0] == "1"
    processes = dict(line.split() for line in output[2:] if line)
    assert processes["1"] == "sh"
    assert sorted(processes.values()) == ["ps", "sh"]  # nothing of the host is visible


def test_without_a_pid_namespace_the_host_pids_are_visible(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    bundle.config["linux"]["namespaces"] = [
        ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "pid"
    ]
    assert run_output(rune, bundle, leaks, "echo $$").strip() != "1"


def test_network_namespace_has_only_loopback_and_it_is_up(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    output = run_output(rune, bundle, leaks, "ls /sys/class/net; ip addr show lo")
    names, _, details = output.partition("\n")
    assert names.split() == ["lo"]
    assert "UP" in details.split("\n")[0] and "127.0.0.1" in details


def test_uts_namespace_hostname_and_domainname(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    bundle.config["hostname"] = "inside"
    bundle.config["domainname"] = "example.test"
    output = run_output(rune, bundle, leaks, "hostname; cat /proc/sys/kernel/domainname")
    assert output.split() == ["inside", "example.test"]
    assert os.uname().nodename != "inside"


def test_user_namespace_maps_ids(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    host_base = 100000
    bundle.config["linux"]["namespaces"].append({"type": "user"})
    bundle.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": host_base, "size": 65536}]
    bundle.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": host_base, "size": 65536}]
    # The mapped root must reach the rootfs (pytest's directories are private to root)
    # and own its files: shift the rootfs to the mapped range.
    for parent in bundle.path.parents:
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)
    for directory, names, files in os.walk(bundle.rootfs):
        for name in [*names, *files]:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            os.lchown(path, info.st_uid + host_base, info.st_gid + host_base)
    os.chown(bundle.rootfs, host_base, host_base)
    bundle.config["root"]["readonly"] = False
    output = run_output(
        rune,
        bundle,
        leaks,
        "id -u; cat /proc/self/uid_map; touch /tmp/made-inside; stat -c %u /tmp/made-inside",
    )
    lines = output.split("\n")
    assert lines[0] == "0"
    assert lines[1].split() == ["0", str(host_base), "65536"]
    assert lines[2] == "0"
    assert (bundle.rootfs / "tmp" / "made-inside").stat().st_uid == host_base


def test_time_namespace_offsets(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    if not os.path.exists("/proc/self/ns/time"):
        pytest.skip("this kernel has no time namespace")
    bundle.config["linux"]["namespaces"].append({"type": "time"})
    day = 86400
    bundle.config["linux"]["timeOffsets"] = {"boottime": {"secs": day, "nanosecs": 0}}
    with open("/proc/uptime") as uptime:
        before = float(uptime.read().split()[0])
    inside = float(run_output(rune, bundle, leaks, "cut -d' ' -f1 /proc/uptime"))
    with open("/proc/uptime") as uptime:
        after = float(uptime.read().split()[0])
    assert before + day <= inside <= after + day


def test_joining_a_network_namespace_by_path(rune: Rune, bundle: Bundle, leaks: LeakCheck) -> None:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 is not installed")
    name = f"rune-test-{leaks.new_id()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "add", "v0", "type", "veth", "peer", "v1"],
            check=True,
        )
        path = f"/run/netns/{name}"
        for namespace in bundle.config["linux"]["namespaces"]:
            if namespace["type"] == "network":
                namespace["path"] = path
        output = run_output(rune, bundle, leaks, "ls /sys/class/net; readlink /proc/self/ns/net")
        assert {"v0", "v1"} <= set(output.split())
        assert f"net:[{os.stat(path).st_ino}]" in output
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def test_joining_another_containers_namespaces(
    rune: Rune, bundle: Bundle, leaks: LeakCheck, tmp_path: Path
) -> None:
    """A pod: the second container joins the first one's network, ipc and uts namespaces."""
    sandbox = leaks.new_id()
    bundle.set_args("sleep", "30").write()
    rune.detached("run", "-d", "-b", str(bundle.path), sandbox, output=tmp_path / "o")
    pid = rune.state(sandbox)["pid"]
    for namespace in bundle.config["linux"]["namespaces"]:
        if namespace["type"] in ("network", "ipc", "uts"):
            namespace["path"] = f"/proc/{pid}/ns/{namespace['type'].replace('work', '')}"
    bundle.config.pop("hostname")
    output = run_output(
        rune, bundle, leaks, "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc"
    )
    assert output.split() == [
        os.readlink(f"/proc/{pid}/ns/net"),
        os.readlink(f"/proc/{pid}/ns/ipc"),
    ]
    rune("delete", "-f", sandbox)


def test_joining_a_missing_namespace_is_an_error(
    rune: Rune, bundle: Bundle, leaks: LeakCheck
) -> None:
    for namespace in bundle.config["linux"]["namespaces"]:
        if namespace["type"] == "ipc":
            namespace["path"] = "/proc/999999999/ns/ipc"
    bundle.write()
    container_id = leaks.new_id()
    result = rune("run", "-b", str(bundle.path), container_id, check=False)
    assert result.returncode == 1
    assert "/proc/999999999/ns/ipc: No such file or directory" in result.stderr
    leaks.assert_clean(container_id)
