"""rune create: set up a container that waits, before its program, for `rune start`."""

from __future__ import annotations

from inclavare.cli.goflags import Flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context
    from inclavare.runtime.create import CreateOptions

USAGE = "[command options] <container-id>"
DESCRIPTION = """\
   The container's namespaces, cgroup, mounts and devices are set up and its init process
   waits before executing the program of config.json, until "rune start <container-id>"."""
ARGUMENTS = (1, 1)
FLAGS = [
    Flag(
        "bundle, b",
        str,
        "path to the root of the bundle directory, defaults to the current directory",
    ),
    Flag(
        "console-socket",
        str,
        "path to an AF_UNIX socket which will receive the master end of the console's pty",
    ),
    Flag("pid-file", str, "specify the file to write the process id to"),
    Flag("no-pivot", bool, "do not use pivot_root to jail the process inside rootfs"),
    Flag("no-new-keyring", bool, "do not create a new session keyring for the container"),
    Flag("preserve-fds", int, "pass N additional file descriptors to the container"),
]


def create_options(options: Options) -> CreateOptions:
    from inclavare.runtime.create import CreateOptions

    result = CreateOptions(options.bundle)
    result.console_socket = options.console_socket
    result.pid_file = options.pid_file
    result.no_pivot = options.no_pivot
    result.no_new_keyring = options.no_new_keyring
    result.preserve_fds = options.preserve_fds
    return result


def run(context: Context, options: Options, args: list[str]) -> int:
    from inclavare.cgroups import prime_migration

    prime_migration()
    from inclavare.runtime.create import create_container

    create_container(context.root, args[0], create_options(options))
    return 0
