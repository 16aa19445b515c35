"""Command-line flags parsed the way runc's callers write them.

runc parses flags with Go's `flag` package (through urfave/cli): `-name` and `--name` are the
same flag, a value follows as `-name value` or `-name=value`, a boolean flag takes no value
unless written `-name=false`. Subcommand flags may also follow the positional arguments
(`rune delete ID --force`), except for commands that pass the rest of the line to a program.
`argparse` accepts neither single-dash long flags nor that ordering, and costs start-up time.
"""

from __future__ import annotations

from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class UsageError(InclavareError):
    """The command line is malformed: unknown flag, missing value, wrong argument count."""


class Flag:
    """One flag: its names (first is canonical), its kind, its default and its help."""

    __slots__ = ("default", "help", "kind", "names")

    def __init__(self, names: str, kind: type, help: str, default: object = None) -> None:
        self.names = tuple(name.strip() for name in names.split(","))
        self.kind = kind  # bool, str, int, or list (a repeatable string)
        self.help = help
        if default is None:
            default = {bool: False, str: "", int: 0, list: []}[kind]
        self.default = default

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def attribute(self) -> str:
        return self.name.replace("-", "_")

    def usage_line(self) -> str:
        spelled = ", ".join(("--" if len(n) > 1 else "-") + n for n in self.names)
        if self.kind is not bool:
            spelled += " value"
        default = f' (default: "{self.default}")' if self.kind is str and self.default else ""
        return f"   {spelled:<28} {self.help}{default}"


class Options:
    """The parsed flags, as attributes named after each flag (dashes become underscores)."""

    def __init__(self, flags: list[Flag]) -> None:
        for flag in flags:
            value = list(flag.default) if isinstance(flag.default, list) else flag.default
            setattr(self, flag.attribute, value)

    def __getattr__(self, name: str) -> Any:  # for mypy: attributes are set dynamically
        raise AttributeError(name)


def _convert(flag: Flag, text: str) -> object:
    if flag.kind is int:
        try:
            return int(text)
        except ValueError:
            raise UsageError(f'invalid value "{text}" for flag -{flag.name}: parse error') from None
    if flag.kind is bool:
        lowered = text.lower()
        if lowered in ("1", "t", "true"):
            return True
        if lowered in ("0", "f", "false"):
            return False
        raise UsageError(f'invalid boolean value "{text}" for -{flag.name}: parse error')
    return text


def parse(
    flags: list[Flag], argv: list[str], stop_at_first_argument: bool = False
) -> tuple[Options, list[str], bool]:
    """Return (options, positional arguments, help requested)."""
    by_name = {name: flag for flag in flags for name in flag.names}
    options = Options(flags)
    positional: list[str] = []
    wants_help = False
    index = 0
    while index < len(argv):
        word = argv[index]
        index += 1
        if word == "--":
            positional.extend(argv[index:])
            break
        if not word.startswith("-") or word == "-":
            positional.append(word)
            if stop_at_first_argument:
                positional.extend(argv[index:])
                break
            continue
        name, has_value, value = word.lstrip("-").partition("=")
        if word.startswith("---") or not name:
            raise UsageError(f"bad flag syntax: {word}")
        if name in ("h", "help") and name not in by_name:
            wants_help = True
            continue
        flag = by_name.get(name)
        if flag is None:
            raise UsageError(f"flag provided but not defined: -{name}")
        if flag.kind is bool:
            setattr(options, flag.attribute, _convert(flag, value) if has_value else True)
            continue
        if not has_value:
            if index >= len(argv):
                raise UsageError(f"flag needs an argument: -{name}")
            value = argv[index]
            index += 1
        converted = _convert(flag, value)
        if flag.kind is list:
            getattr(options, flag.attribute).append(converted)
        else:
            setattr(options, flag.attribute, converted)
    return options, positional, wants_help
