"""Install the project's programs as small launchers in PREFIX/bin.

containerd, dockerd and podman execute `rune` several times per container, so the launcher
starts Python in isolated mode without the site module (`-IS`): it ignores PYTHON* variables
and the user's site directory (a runtime run by root daemons should not honour them) and
skips the start-up work of `site`. The source tree and the venv's packages are put on
sys.path explicitly.
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
from pathlib import Path

# program name -> (module whose main() it runs, whether it skips the interpreter's shutdown)
PROGRAMS = {
    "rune": ("inclavare.cli.rune", True),
    "shelter": ("inclavare.cli.shelter", False),
    "enclave-sign": ("inclavare.cli.enclave_sign", False),
    "enclave-tls-server": ("inclavare.cli.enclave_tls_server", False),
    "enclave-tls-client": ("inclavare.cli.enclave_tls_client", False),
    "inclavared": ("inclavare.cli.inclavared", False),
    "inclavare-enclave-service": ("inclavare.cli.enclave_service", False),
    "inclavare-device-plugin": ("inclavare.cli.inclavare_device_plugin", False),
    "inclavare-node-installer": ("inclavare.cli.inclavare_node_installer", False),
    "containerd-shim-rune-v2": ("inclavare.cli.containerd_shim_rune_v2", True),
    "rune-sign-server": ("inclavare.cli.rune_sign_server", False),
}


def launcher_text(interpreter: str, paths: list[str], module: str, exit_now: bool) -> str:
    ending = (
        "from inclavare.cli import exit_now\nexit_now(main())\n"
        if exit_now
        else "sys.exit(main())\n"
    )
    return (
        f"#!{interpreter} -IS\n"
        "# Installed by `make install` from the inclavare source tree.\n"
        "import sys\n"
        f"sys.path[:0] = {paths!r}\n"
        f"from {module} import main\n"
        f"{ending}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="/usr/local")
    parser.add_argument("--venv", required=True)
    parser.add_argument("--src", required=True)
    args = parser.parse_args()

    venv = Path(args.venv).resolve()
    interpreter = os.path.realpath(venv / "bin" / "python")
    purelib = sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    paths = [str(Path(args.src).resolve()), purelib]

    bindir = Path(args.prefix) / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for name, (module, exit_now) in PROGRAMS.items():
        target = bindir / name
        text = launcher_text(interpreter, paths, module, exit_now)
        if target.is_file() and not target.is_symlink() and target.read_text() == text:
            continue
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(target)
        print(f"installed {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
