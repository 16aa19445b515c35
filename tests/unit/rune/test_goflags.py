"""Command lines as runc's callers write them (Go flag rules)."""

from __future__ import annotations

import pytest

from inclavare.cli.goflags import Flag, UsageError, parse

FLAGS = [
    Flag("bundle, b", str, "bundle"),
    Flag("detach, d", bool, "detach"),
    Flag("preserve-fds", int, "fds"),
    Flag("env, e", list, "environment"),
]


@pytest.mark.parametrize(
    "argv",
    [
        ["--bundle", "/b", "id"],
        ["-bundle", "/b", "id"],
        ["--bundle=/b", "id"],
        ["-b", "/b", "id"],
        ["-b=/b", "id"],
        ["id", "--bundle", "/b"],
    ],
)
def test_every_spelling_of_a_value_flag(argv: list[str]) -> None:
    options, args, wants_help = parse(FLAGS, argv)
    assert options.bundle == "/b"
    assert args == ["id"]
    assert not wants_help


def test_boolean_flags_take_no_value_unless_written_with_equals() -> None:
    options, args, _ = parse(FLAGS, ["-d", "id"])
    assert options.detach is True and args == ["id"]
    options, args, _ = parse(FLAGS, ["--detach=false", "id"])
    assert options.detach is False and args == ["id"]


def test_integers_and_repeated_flags() -> None:
    options, _, _ = parse(FLAGS, ["--preserve-fds", "3", "-e", "A=1", "--env=B=2", "id"])
    assert options.preserve_fds == 3
    assert options.env == ["A=1", "B=2"]


def test_defaults_are_not_shared_between_parses() -> None:
    first, _, _ = parse(FLAGS, ["-e", "A=1"])
    second, _, _ = parse(FLAGS, [])
    assert first.env == ["A=1"] and second.env == []


def test_stop_at_first_argument_keeps_the_rest_for_the_program() -> None:
    options, args, _ = parse(FLAGS, ["-d", "id", "ls", "-la", "--bundle", "x"], True)
    assert options.detach is True and options.bundle == ""
    assert args == ["id", "ls", "-la", "--bundle", "x"]


def test_double_dash_ends_flags() -> None:
    _, args, _ = parse(FLAGS, ["--", "-d"])
    assert args == ["-d"]


def test_help() -> None:
    _, _, wants_help = parse(FLAGS, ["--help"])
    assert wants_help


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nope"], "flag provided but not defined: -nope"),
        (["--bundle"], "flag needs an argument: -bundle"),
        (["--preserve-fds", "x"], 'invalid value "x" for flag -preserve-fds'),
        (["--detach=maybe"], 'invalid boolean value "maybe" for -detach'),
        (["---x"], "bad flag syntax: ---x"),
    ],
)
def test_malformed_command_lines(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(FLAGS, argv)
