"""rune ps: the processes running inside a container, as `ps` shows them on the host."""

from __future__ import annotations

import sys

from inclavare.cli.goflags import Flag, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context

USAGE = "[command options] <container-id> [ps options]"
DESCRIPTION = """\
   Runs ps on the host (with "-ef" unless ps options are given) and keeps the header and
   the rows of the container's processes. --format json prints their pids."""
ARGUMENTS = (1, 1 << 30)
STOP_AT_FIRST_ARGUMENT = True  # what follows the container id is for ps
FLAGS = [Flag("format, f", str, "select one of: table or json", "table")]


def run(context: Context, options: Options, args: list[str]) -> int:
    import subprocess

    from inclavare import lightjson
    from inclavare.cgroups import processes_in
    from inclavare.errors import InclavareError
    from inclavare.runtime.container import Container

    if options.format not in ("table", "json"):
        raise UsageError(f"invalid format option {options.format!r}: use table or json")
    container = Container.load(context.root, args[0])
    pids = processes_in(container.record.get("cgroup_dirs_leaf", []))
    if options.format == "json":
        sys.stdout.write(lightjson.dumps(pids) + "\n")
        return 0
    try:
        listing = subprocess.run(
            ["ps", *(args[1:] or ["-ef"])], capture_output=True, text=True, check=False
        )
    except OSError as error:
        raise InclavareError(f"run ps: {error.strerror}") from None
    if listing.returncode != 0:
        raise InclavareError(f"ps {' '.join(args[1:])}: {listing.stderr.strip()}")
    lines = listing.stdout.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    if "PID" not in header:
        raise InclavareError("ps output has no PID column: pass options that show it")
    column = header.index("PID")
    wanted = {str(pid) for pid in pids}
    sys.stdout.write(lines[0] + "\n")
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > column and fields[column] in wanted:
            sys.stdout.write(line + "\n")
    return 0
