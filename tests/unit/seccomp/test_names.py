"""The table of system call names against the host's libseccomp, and the features object."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inclavare.linux.seccomp import features
from inclavare.linux.seccomp_names import SYSCALL_NAMES


def host_libseccomp() -> ctypes.CDLL:
    try:
        library = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        pytest.skip("libseccomp is not installed (apt-get install libseccomp2)")
    library.seccomp_syscall_resolve_name_arch.argtypes = (ctypes.c_uint32, ctypes.c_char_p)
    library.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    return library


def test_every_name_in_the_table_is_known_to_this_libseccomp() -> None:
    """A name the table accepts must not fail later, when the init builds the filter."""
    resolve = host_libseccomp().seccomp_syscall_resolve_name_arch
    unknown = sorted(name for name in SYSCALL_NAMES if resolve(0, name.encode()) == -1)
    assert not unknown, f"not known to this libseccomp: {unknown}"


def test_the_table_has_the_common_calls() -> None:
    assert {"read", "execve", "clone3", "socketcall", "_llseek", "set_tls"} <= SYSCALL_NAMES
    assert "foo" not in SYSCALL_NAMES


def test_features_shape() -> None:
    host_libseccomp()
    found = features()
    assert found["enabled"] is True
    assert "SCMP_ACT_NOTIFY" not in found["actions"]
    assert found["actions"] == sorted(found["actions"])
    assert "SCMP_ACT_KILL_PROCESS" in found["actions"]
    assert len(found["operators"]) == 7
    assert "SCMP_ARCH_X86_64" in found["archs"] and "SCMP_ARCH_RISCV64" in found["archs"]
    assert found["knownFlags"] == [
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_TSYNC",
    ]
    assert set(found["supportedFlags"]) <= set(found["knownFlags"])
    assert "SECCOMP_FILTER_FLAG_TSYNC" in found["supportedFlags"]


def test_importing_the_binding_leaves_ctypes_util_as_it_was() -> None:
    """pyseccomp is imported with a stand-in for ctypes.util; afterwards the real module is
    what `import ctypes.util` gives, and no ldconfig process was needed."""
    host_libseccomp()
    check = (
        "import sys\n"
        "from inclavare.linux import seccomp\n"
        "assert seccomp.features()['enabled']\n"
        "assert 'pyseccomp' in sys.modules and 'ctypes.util' not in sys.modules\n"
        "import ctypes, ctypes.util\n"
        "assert ctypes.util.__file__.endswith('util.py'), ctypes.util\n"
        "assert ctypes.util.find_library('c')\n"
    )
    src = Path(__file__).resolve().parents[3] / "src"
    completed = subprocess.run(
        [sys.executable, "-c", check],
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
