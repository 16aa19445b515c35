"""rune kill: send a signal to the container's init process, or to all its processes."""

from __future__ import annotations

from inclavare.cli.goflags import Flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context

USAGE = "[command options] <container-id> [signal]"
DESCRIPTION = """\
   The signal is a name ("KILL", "SIGKILL") or a number ("9"); the default is SIGTERM."""
ARGUMENTS = (1, 2)
FLAGS = [Flag("all, a", bool, "send the specified signal to all processes inside the container")]


def run(context: Context, options: Options, args: list[str]) -> int:
    from inclavare.linux.signals import parse_signal
    from inclavare.runtime.container import Container
    from inclavare.runtime.lifecycle import kill

    signal_number = parse_signal(args[1] if len(args) > 1 else "SIGTERM")
    kill(Container.load(context.root, args[0]), signal_number, options.all)
    return 0
