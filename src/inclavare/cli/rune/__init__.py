"""rune: an OCI runtime with runc's command line.

    rune [global options] COMMAND [command options] [arguments...]

Each command lives in its own module of this package and is imported only when it runs:
containerd executes rune several times per container, so start-up time matters.
"""

from __future__ import annotations

import sys

from inclavare import log
from inclavare.cli.goflags import Flag, UsageError, parse
from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

PROGRAM = "rune"
DEFAULT_ROOT = "/run/rune"

# command -> one-line description; the module inclavare.cli.rune.<command> implements it
COMMANDS = {
    "attest": "get a local report or a quote of an enclave container's enclave",
    "create": "create a container",
    "delete": "delete any resources held by the container, often used with detached containers",
    "events": "display container events such as OOM notifications and cgroup statistics",
    "exec": "execute new process inside the container",
    "features": "show the enabled features",
    "kill": "kill sends the specified signal (default: SIGTERM) to the container's init process",
    "list": "lists containers started by rune with the given root",
    "pause": "pause suspends all processes inside the container",
    "ps": "ps displays the processes running inside a container",
    "resume": "resumes all processes that have been previously paused",
    "run": "create and run a container",
    "spec": "create a new specification file",
    "start": "executes the user defined process in a created container",
    "state": "output the state of a container",
    "update": "update container resource constraints",
}

GLOBAL_FLAGS = [
    Flag("debug", bool, "enable debug logging"),
    Flag("log", str, "set the log file to write rune logs to (default is '/dev/stderr')"),
    Flag("log-format", str, "set the log format ('text' (default), or 'json')", "text"),
    Flag("root", str, "root directory for storage of container state", DEFAULT_ROOT),
    Flag("criu", str, "accepted for compatibility with runc; checkpointing is not supported"),
    Flag("systemd-cgroup", bool, "use systemd for cgroups (not supported: rune uses cgroupfs)"),
    Flag("rootless", str, "accepted for compatibility with runc ('true', 'false' or 'auto')"),
    Flag("version, v", bool, "print the version"),
]


class Context:
    """The global options every command sees."""

    __slots__ = ("debug", "root")

    def __init__(self, root: str, debug: bool) -> None:
        self.root = root
        self.debug = debug


def version_text() -> str:
    from inclavare import __version__
    from inclavare.runtime.container import OCI_VERSION

    python = ".".join(str(part) for part in sys.version_info[:3])
    return f"{PROGRAM} version {__version__}\nspec: {OCI_VERSION}\npython: {python}\n"


def help_text() -> str:
    lines = [
        f"{PROGRAM} - an OCI runtime for ordinary and enclave containers",
        "",
        f"USAGE:\n   {PROGRAM} [global options] command [command options] [arguments...]",
        "",
        "COMMANDS:",
    ]
    lines += [f"   {name:<10} {text}" for name, text in sorted(COMMANDS.items())]
    lines += ["", "GLOBAL OPTIONS:"] + [flag.usage_line() for flag in GLOBAL_FLAGS]
    lines.append("   --help, -h                   show help")
    return "\n".join(lines) + "\n"


def command_help(name: str, module: ModuleType) -> str:
    lines = [
        f"NAME:\n   {PROGRAM} {name} - {COMMANDS[name]}",
        "",
        f"USAGE:\n   {PROGRAM} {name} {module.USAGE}".rstrip(),
    ]
    if getattr(module, "DESCRIPTION", ""):
        lines += ["", "DESCRIPTION:", module.DESCRIPTION.rstrip()]
    if module.FLAGS:
        lines += ["", "OPTIONS:"] + [flag.usage_line() for flag in module.FLAGS]
    return "\n".join(lines) + "\n"


def check_argument_count(name: str, args: list[str], minimum: int, maximum: int) -> None:
    if minimum <= len(args) <= maximum:
        return
    if minimum == maximum:
        expected = f"exactly {minimum}"
    elif len(args) < minimum:
        expected = f"at least {minimum}"
    else:
        expected = f"at most {maximum}"
    raise UsageError(f'"{name}" requires {expected} argument(s)')


def report_error(message: str) -> None:
    """An error goes to the log (containerd reads it there) and, if that is a file, to stderr."""
    log.error(message)
    if not log.logs_to_stderr():
        sys.stderr.write(f"{PROGRAM}: {message}\n")


def dispatch(argv: list[str]) -> int:
    options, rest, wants_help = parse(GLOBAL_FLAGS, argv, stop_at_first_argument=True)
    log.configure(options.log, options.log_format, options.debug)
    if options.log_format not in ("text", "json"):
        raise UsageError(f"unknown log-format {options.log_format!r}: use 'text' or 'json'")
    if options.version:
        sys.stdout.write(version_text())
        return 0
    if wants_help or not rest or rest[0] == "help":
        sys.stdout.write(help_text())
        return 0 if wants_help or rest else 1
    if options.systemd_cgroup:
        raise InclavareError(
            "--systemd-cgroup is not supported: rune manages cgroups through cgroupfs;"
            " set SystemdCgroup = false for this runtime"
        )
    name, args = rest[0], rest[1:]
    if name not in COMMANDS:
        raise UsageError(f"no such command: {name}")
    module = __import__(f"inclavare.cli.rune.{name}", fromlist=["run"])
    stop = getattr(module, "STOP_AT_FIRST_ARGUMENT", False)
    command_options, command_args, command_wants_help = parse(module.FLAGS, args, stop)
    if command_wants_help:
        sys.stdout.write(command_help(name, module))
        return 0
    check_argument_count(name, command_args, *module.ARGUMENTS)
    context = Context(options.root, options.debug)
    result: int = module.run(context, command_options, command_args)
    return result


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    try:
        return dispatch(arguments)
    except InclavareError as error:
        report_error(str(error))
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as error:  # the environment refused something: name what and why
        what = f"{error.filename}: {error.strerror}" if error.filename else str(error)
        report_error(what)
        return 1
    except Exception as error:  # a bug: say so in one line, with the traceback under --debug
        report_error(f"internal error: {type(error).__name__}: {error}")
        if "--debug" in arguments or "-debug" in arguments:
            import traceback

            traceback.print_exc()
        return 1
