"""Seccomp filters loaded for real with libseccomp, each in a child forked for the purpose.

The child loads a profile, makes the system calls the test is about and writes what happened
to a pipe as JSON; the parent checks the report, or how the child died. Every child is
reaped, and killed first if it outlives its deadline. No container is run: these tests need
root and libseccomp, not rune.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inclavare.linux import syscalls
from inclavare.linux.constants import CLONE_NEWUTS, PR_SET_NO_NEW_PRIVS
from inclavare.linux.seccomp import (
    SeccompError,
    build_filter,
    compile_profile,
    features,
    load,
)
from tests.unit.seccomp.profiles import docker_like_profile

ALLOW = "SCMP_ACT_ALLOW"
ERRNO = "SCMP_ACT_ERRNO"
NOBODY = 65534
# An errno no call here returns on its own: seeing it proves the filter answered.
MARK = errno.EDOM
# Ids no process, group or user has (beyond pid_max), for getpriority(2).
NO_SUCH_ID = 0x7FFF0000
# personality(2) personas.
PER_QUERY = 0xFFFFFFFF
PER_LINUX32 = 0x0008
ADDR_NO_RANDOMIZE = 0x0040000
AF_VSOCK = 40

libc = ctypes.CDLL(None, use_errno=True)
libc.personality.argtypes = (ctypes.c_ulong,)
libc.personality.restype = ctypes.c_int

# What a Python process needs between loading a strict filter and exiting.
PYTHON_NEEDS = [
    *("read", "write", "close", "exit", "exit_group", "brk", "mmap", "munmap", "mremap"),
    *("madvise", "mprotect", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "futex"),
    *("getpid", "gettid", "fstat", "newfstatat", "lseek", "ioctl", "getrandom", "clock_gettime"),
]


@pytest.fixture(scope="module", autouse=True)
def _requirements() -> None:
    """Replaces the directory's requirements: no rune or busybox needed here."""
    if os.geteuid() != 0:
        pytest.skip("seccomp filter tests need root (setuid, chroot, CAP_SYS_ADMIN)")
    try:
        ctypes.CDLL("libseccomp.so.2")
    except OSError:
        pytest.skip("libseccomp is not installed (apt-get install libseccomp2)")


class Outcome:
    def __init__(self, status: int, report: dict[str, Any] | None) -> None:
        self.status = status
        self.report = report

    @property
    def signal(self) -> int | None:
        return os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None


def in_child(work: Callable[[], dict[str, Any]], timeout: float = 20) -> Outcome:
    """Run `work` in a forked child; its result comes back as JSON over a pipe."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns to pytest
        try:
            os.close(reader)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            try:
                report = work()
            except BaseException as error:
                report = {"exception": f"{type(error).__name__}: {error}"}
            os.write(writer, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(writer)
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    reaped = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the child did not finish within {timeout} s")
            ready, _, _ = select.select([reader], [], [], remaining)
            if ready:
                chunk = os.read(reader, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        reaped = True
    finally:
        os.close(reader)
        if not reaped:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    data = b"".join(chunks)
    return Outcome(status, json.loads(data) if data else None)


def report_of(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    outcome = in_child(work)
    assert outcome.report is not None, f"the child died (wait status {outcome.status:#x})"
    assert "exception" not in outcome.report, outcome.report["exception"]
    return outcome.report


def result(call: Callable[[], object]) -> int:
    """0 when the call succeeds, else its errno."""
    try:
        call()
    except OSError as error:
        return error.errno or -1
    return 0


def getpriority(which: int, who: int) -> int:
    """0 when getpriority(2) succeeds, else its errno."""
    return result(lambda: os.getpriority(which, who))


def personality(persona: int) -> int:
    """0 when personality(2) succeeds, else its errno."""
    if libc.personality(persona) == -1:
        return ctypes.get_errno()
    return 0


def status_fields() -> dict[str, str]:
    with open("/proc/self/status") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def drop_to_nobody() -> None:
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)


def rule(names: list[str], action: str = ERRNO, **more: Any) -> dict[str, Any]:
    return {"names": names, "action": action, **more}


def allow_except(*rules: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"defaultAction": ALLOW, "syscalls": list(rules), **more}


def test_errno_actions_and_their_errno(tmp_path: Path) -> None:
    profile = compile_profile(
        allow_except(
            rule(["mkdir", "mkdirat"]),
            rule(["symlink", "symlinkat"], errnoRet=errno.EOPNOTSUPP),
            rule(["link", "linkat"], errnoRet=0),
        )
    )

    def work() -> dict[str, Any]:
        load(profile)
        return {
            "mkdir": result(lambda: os.mkdir(tmp_path / "dir")),
            "symlink": result(lambda: os.symlink("target", tmp_path / "symlink")),
            "link": result(lambda: os.link(tmp_path / "file", tmp_path / "link")),
            "write": result(lambda: (tmp_path / "file").write_text("allowed")),
        }

    assert report_of(work) == {
        "mkdir": errno.EPERM,
        "symlink": errno.EOPNOTSUPP,
        "link": 0,  # errnoRet 0: the call "succeeds" without being made
        "write": 0,
    }
    assert not (tmp_path / "dir").exists()
    assert not (tmp_path / "symlink").is_symlink()
    assert not (tmp_path / "link").exists()
    assert (tmp_path / "file").read_text() == "allowed"


def test_default_errno_with_an_allow_list(tmp_path: Path) -> None:
    profile = compile_profile(
        {
            "defaultAction": ERRNO,
            "defaultErrnoRet": MARK,
            "syscalls": [rule([*PYTHON_NEEDS, "uname"], ALLOW)],
        }
    )

    def work() -> dict[str, Any]:
        load(profile)
        return {
            "mkdir": result(lambda: os.mkdir(tmp_path / "dir")),
            "uname": result(os.uname),
            "sched_getaffinity": result(lambda: os.sched_getaffinity(0)),
        }

    assert report_of(work) == {"mkdir": MARK, "uname": 0, "sched_getaffinity": MARK}
    assert not (tmp_path / "dir").exists()


PRIO_PROCESS, PRIO_PGRP, PRIO_USER = os.PRIO_PROCESS, os.PRIO_PGRP, os.PRIO_USER
CONDITIONS = [
    # (name, args of the rule for getpriority(which, who), calls blocked, calls let through)
    (
        "EQ",
        [{"index": 0, "value": PRIO_PGRP, "op": "SCMP_CMP_EQ"}],
        [(PRIO_PGRP, 0)],
        [(PRIO_PROCESS, 0), (PRIO_USER, 0)],
    ),
    (
        "NE",
        [{"index": 0, "value": PRIO_PROCESS, "op": "SCMP_CMP_NE"}],
        [(PRIO_PGRP, 0), (PRIO_USER, 0)],
        [(PRIO_PROCESS, 0)],
    ),
    (
        "GT",
        [{"index": 1, "value": NO_SUCH_ID + 1, "op": "SCMP_CMP_GT"}],
        [(PRIO_PROCESS, NO_SUCH_ID + 2)],
        [(PRIO_PROCESS, NO_SUCH_ID + 1), (PRIO_PROCESS, 0)],
    ),
    (
        "GE",
        [{"index": 1, "value": NO_SUCH_ID + 1, "op": "SCMP_CMP_GE"}],
        [(PRIO_PROCESS, NO_SUCH_ID + 1), (PRIO_PROCESS, NO_SUCH_ID + 2)],
        [(PRIO_PROCESS, NO_SUCH_ID)],
    ),
    (
        "LT",
        [{"index": 1, "value": NO_SUCH_ID + 1, "op": "SCMP_CMP_LT"}],
        [(PRIO_PROCESS, NO_SUCH_ID), (PRIO_PROCESS, 0)],
        [(PRIO_PROCESS, NO_SUCH_ID + 1)],
    ),
    (
        "LE",
        [{"index": 1, "value": NO_SUCH_ID + 1, "op": "SCMP_CMP_LE"}],
        [(PRIO_PROCESS, NO_SUCH_ID + 1)],
        [(PRIO_PROCESS, NO_SUCH_ID + 2)],
    ),
    (
        "MASKED_EQ",
        [{"index": 1, "value": 0xFF00, "valueTwo": 0x1200, "op": "SCMP_CMP_MASKED_EQ"}],
        [(PRIO_PROCESS, NO_SUCH_ID + 0x1234), (PRIO_PROCESS, NO_SUCH_ID + 0x12FF)],
        [(PRIO_PROCESS, NO_SUCH_ID + 0x3434), (PRIO_PROCESS, 0)],
    ),
    (
        "all conditions on different arguments must hold",
        [
            {"index": 0, "value": PRIO_PROCESS, "op": "SCMP_CMP_EQ"},
            {"index": 1, "value": NO_SUCH_ID + 1, "op": "SCMP_CMP_EQ"},
        ],
        [(PRIO_PROCESS, NO_SUCH_ID + 1)],
        [(PRIO_PGRP, NO_SUCH_ID + 1), (PRIO_PROCESS, NO_SUCH_ID + 2)],
    ),
    (
        "any condition on the same argument may hold",
        [
            {"index": 0, "value": PRIO_PGRP, "op": "SCMP_CMP_EQ"},
            {"index": 0, "value": PRIO_USER, "op": "SCMP_CMP_EQ"},
        ],
        [(PRIO_PGRP, 0), (PRIO_USER, 0)],
        [(PRIO_PROCESS, 0)],
    ),
]


@pytest.mark.parametrize(
    ("args", "blocked", "allowed"), [c[1:] for c in CONDITIONS], ids=[c[0] for c in CONDITIONS]
)
def test_argument_conditions(
    args: list[dict[str, Any]], blocked: list[tuple[int, int]], allowed: list[tuple[int, int]]
) -> None:
    profile = compile_profile(allow_except(rule(["getpriority"], errnoRet=MARK, args=args)))

    def work() -> dict[str, Any]:
        load(profile)
        return {"results": [getpriority(which, who) for which, who in blocked + allowed]}

    results = report_of(work)["results"]
    assert results[: len(blocked)] == [MARK] * len(blocked)
    assert all(found in (0, errno.ESRCH) for found in results[len(blocked) :]), results


def test_personality_value_blocked_another_allowed() -> None:
    profile = compile_profile(
        allow_except(
            rule(
                ["personality"],
                args=[{"index": 0, "value": PER_LINUX32, "op": "SCMP_CMP_EQ"}],
            )
        )
    )

    def work() -> dict[str, Any]:
        load(profile)
        return {"linux32": personality(PER_LINUX32), "query": personality(PER_QUERY)}

    assert report_of(work) == {"linux32": errno.EPERM, "query": 0}


@pytest.mark.parametrize(
    "action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP"]
)
def test_killing_actions_end_the_process_with_sigsys(action: str) -> None:
    profile = compile_profile(allow_except(rule(["getpriority"], action)))

    def work() -> dict[str, Any]:
        load(profile)
        os.getpriority(PRIO_PROCESS, 0)
        return {"survived": True}

    outcome = in_child(work)
    assert outcome.report is None
    assert outcome.signal == signal.SIGSYS


@pytest.mark.parametrize(
    ("action", "process_survives"),
    [("SCMP_ACT_KILL_THREAD", True), ("SCMP_ACT_KILL_PROCESS", False)],
)
def test_kill_thread_spares_the_other_threads(action: str, process_survives: bool) -> None:
    profile = compile_profile(allow_except(rule(["getpriority"], action)))

    def work() -> dict[str, Any]:
        load(profile)
        # Through ctypes, which lets go of the GIL: a thread killed holding it would stop
        # the others too.
        thread = threading.Thread(target=libc.getpriority, args=(PRIO_PROCESS, 0), daemon=True)
        thread.start()
        thread.join(timeout=2)
        return {"main thread": "alive"}

    outcome = in_child(work)
    if process_survives:
        assert outcome.report == {"main thread": "alive"}
    else:
        assert outcome.report is None
        assert outcome.signal == signal.SIGSYS


def test_trace_without_a_tracer_fails_the_call_with_enosys() -> None:
    profile = compile_profile(allow_except(rule(["getpriority"], "SCMP_ACT_TRACE")))

    def work() -> dict[str, Any]:
        load(profile)
        return {"getpriority": getpriority(PRIO_PROCESS, 0)}

    assert report_of(work) == {"getpriority": errno.ENOSYS}


def test_log_lets_the_call_through() -> None:
    profile = compile_profile(allow_except(rule(["getpriority"], "SCMP_ACT_LOG")))

    def work() -> dict[str, Any]:
        load(profile)
        return {"getpriority": getpriority(PRIO_PROCESS, 0)}

    assert report_of(work) == {"getpriority": 0}


def test_a_rule_with_the_default_action_is_left_out(tmp_path: Path) -> None:
    """libseccomp refuses such a rule; it changes nothing, so it is not added."""
    profile = compile_profile(
        {
            "defaultAction": ERRNO,
            "syscalls": [
                rule(PYTHON_NEEDS, ALLOW),
                rule(["mkdir", "mkdirat"]),
                rule(["mkdir", "mkdirat"], errnoRet=errno.EPERM),
            ],
        }
    )

    def work() -> dict[str, Any]:
        load(profile)
        return {"mkdir": result(lambda: os.mkdir(tmp_path / "dir"))}

    assert report_of(work) == {"mkdir": errno.EPERM}


def test_loading_leaves_no_new_privs_alone() -> None:
    profile = compile_profile(allow_except(rule(["getpriority"], errnoRet=MARK)))

    def work() -> dict[str, Any]:
        load(profile)
        return status_fields()

    fields = report_of(work)
    assert fields["Seccomp"] == "2"
    assert fields["Seccomp_filters"] == "1"
    assert fields["NoNewPrivs"] == "0"


def test_loading_without_cap_sys_admin_under_no_new_privs(tmp_path: Path) -> None:
    profile = compile_profile(allow_except(rule(["mkdir", "mkdirat"], errnoRet=MARK)))

    def work() -> dict[str, Any]:
        syscalls.prctl(PR_SET_NO_NEW_PRIVS, 1)
        drop_to_nobody()
        capabilities = status_fields()["CapEff"]
        load(profile)
        return {"CapEff": capabilities, "mkdir": result(lambda: os.mkdir(tmp_path / "dir"))}

    assert report_of(work) == {"CapEff": "0000000000000000", "mkdir": MARK}


def test_loading_without_cap_sys_admin_nor_no_new_privs_fails_clearly() -> None:
    profile = compile_profile(allow_except(rule(["mkdir"])))

    def work() -> dict[str, Any]:
        drop_to_nobody()
        try:
            load(profile)
        except SeccompError as error:
            return {"error": str(error)}
        return {"error": None}

    message = report_of(work)["error"]
    assert message == (
        "seccomp: loading the filter: permission denied: without CAP_SYS_ADMIN a process "
        "needs no_new_privs (noNewPrivileges) to load a filter"
    )


def test_a_filter_built_on_the_host_loads_after_leaving_it(tmp_path: Path) -> None:
    """As in the container's init: build before pivot_root, load right before execve."""
    profile = compile_profile(allow_except(rule(["mkdir", "mkdirat"], errnoRet=MARK)))
    empty_root = tmp_path / "root"
    empty_root.mkdir()

    def work() -> dict[str, Any]:
        built = build_filter(profile)
        os.chroot(empty_root)
        os.chdir("/")
        before = result(lambda: os.mkdir("/before"))
        built.load()
        return {"before": before, "after": result(lambda: os.mkdir("/after"))}

    assert report_of(work) == {"before": 0, "after": MARK}
    assert sorted(os.listdir(empty_root)) == ["before"]


def test_tsync_applies_the_filter_to_the_other_threads() -> None:
    def work_with(flags: list[str]) -> Callable[[], dict[str, Any]]:
        profile = compile_profile(allow_except(rule(["getpriority"], errnoRet=MARK), flags=flags))

        def work() -> dict[str, Any]:
            loaded = threading.Event()
            seen: list[int] = []

            def other_thread() -> None:
                loaded.wait(10)
                seen.append(getpriority(PRIO_PROCESS, 0))

            thread = threading.Thread(target=other_thread)
            thread.start()
            load(profile)
            loaded.set()
            thread.join(10)
            return {"other thread": seen}

        return work

    assert report_of(work_with([])) == {"other thread": [0]}
    assert report_of(work_with(["SECCOMP_FILTER_FLAG_TSYNC"])) == {"other thread": [MARK]}


def test_every_supported_flag_loads() -> None:
    supported = features()["supportedFlags"]
    assert "SECCOMP_FILTER_FLAG_TSYNC" in supported
    profile = compile_profile(allow_except(rule(["getpriority"], errnoRet=MARK), flags=supported))

    def work() -> dict[str, Any]:
        load(profile)
        return {
            "getpriority": getpriority(PRIO_PROCESS, 0),
            "ssb": status_fields().get("Speculation_Store_Bypass", ""),
        }

    report = report_of(work)
    assert report["getpriority"] == MARK
    if "SECCOMP_FILTER_FLAG_SPEC_ALLOW" in supported:
        # Without the flag the kernel may force the mitigation on a seccomp process.
        assert "force mitigated" not in report["ssb"]


def usable_architectures() -> list[str]:
    """The recognised architectures with this machine's byte order."""
    usable = []
    for arch in features()["archs"]:
        try:
            compile_profile({"defaultAction": ALLOW, "architectures": [arch]})
        except SeccompError:
            continue
        usable.append(arch)
    return usable


def test_every_usable_architecture_is_known_to_libseccomp() -> None:
    """The architecture tokens rune computes are the ones libseccomp accepts, and the
    native calls are still filtered with foreign architectures in the filter."""
    archs = usable_architectures()
    assert len(archs) in (9, 10)  # nine big-endian, ten little-endian
    profile = compile_profile(
        allow_except(rule(["getpriority"], errnoRet=MARK), architectures=archs)
    )

    def work() -> dict[str, Any]:
        load(profile)
        return {"getpriority": getpriority(PRIO_PROCESS, 0)}

    assert report_of(work) == {"getpriority": MARK}


def test_a_docker_like_profile(tmp_path: Path) -> None:
    profile = compile_profile(docker_like_profile())

    def fork_and_reap() -> None:
        child = os.fork()
        if child == 0:
            os._exit(0)
        os.waitpid(child, 0)

    def work() -> dict[str, Any]:
        load(profile)
        return {
            "mkdir": result(lambda: os.mkdir(tmp_path / "dir")),
            "fork": result(fork_and_reap),
            "unshare": result(lambda: syscalls.unshare(CLONE_NEWUTS)),
            "personality query": personality(PER_QUERY),
            "personality ADDR_NO_RANDOMIZE": personality(ADDR_NO_RANDOMIZE),
            "vsock socket": result(lambda: socket.socket(AF_VSOCK).close()),
            "unix socket": result(lambda: socket.socket(socket.AF_UNIX).close()),
        }

    assert report_of(work) == {
        "mkdir": 0,
        "fork": 0,
        "unshare": errno.EPERM,
        "personality query": 0,
        "personality ADDR_NO_RANDOMIZE": errno.EPERM,
        "vsock socket": errno.EPERM,
        "unix socket": 0,
    }
    assert (tmp_path / "dir").is_dir()
