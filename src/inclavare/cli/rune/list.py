"""rune list: the containers under the state root, as a table or as JSON."""

from __future__ import annotations

import sys

from inclavare.cli.goflags import Flag, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context

USAGE = "[command options]"
ARGUMENTS = (0, 0)
FLAGS = [
    Flag("format, f", str, "select one of: table or json", "table"),
    Flag("quiet, q", bool, "display only container IDs"),
]


def _owner(path: str) -> str:
    import os
    import pwd

    try:
        uid = os.stat(path).st_uid
    except OSError:
        return ""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


def run(context: Context, options: Options, args: list[str]) -> int:
    from inclavare import lightjson
    from inclavare.runtime.container import list_containers

    if options.format not in ("table", "json"):
        raise UsageError(f"invalid format option {options.format!r}: use table or json")
    containers = list_containers(context.root)
    if options.quiet:
        sys.stdout.write("".join(f"{c.id}\n" for c in containers))
        return 0
    states = []
    for container in containers:
        state = container.oci_state()
        state["owner"] = _owner(container.state_dir)
        states.append(state)
    if options.format == "json":
        sys.stdout.write(lightjson.dumps(states) + "\n")
        return 0
    rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
    rows += [
        [s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"]] for s in states
    ]
    # Columns as runc's tabwriter lays them out: at least 12 wide, 3 spaces of padding.
    widths = [max(12, 3 + max(len(row[c]) for row in rows)) for c in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        sys.stdout.write("".join(cells).rstrip() + "\n")
    return 0
