"""Paths inside a container's root file system, as the container sees them.

A path is normalised (absolute, no '.', '..' or empty component; '..' stops at the root) and
resolved through symbolic links without ever leaving the root: an absolute link target
starts again from the root, and '..' cannot climb above it. Both the measurement of a
bundle on the host (tee/sim/files.py) and of an image's layers (oci/image.py) resolve this
way, so a file has the same measured path whichever way it is read.
"""

from __future__ import annotations

from collections.abc import Callable

from inclavare.errors import InclavareError

MAX_SYMLINKS = 40


class TooManyLinks(InclavareError):
    """More than MAX_SYMLINKS links on the way: a loop, or a chain too long to follow."""


def normalise(path: str) -> str:
    """`path` as an absolute path without '.', '..' or empty components ('..' stops at /)."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def resolve(path: str, link_target: Callable[[list[str]], str | None]) -> list[str]:
    """The components of `path` with every symbolic link resolved inside the root.

    `link_target(components)` gives the target of the link at those components, or None when
    there is no link there (nothing, or anything else); it may raise to refuse a path.
    """
    pending = [part for part in normalise(path).split("/") if part]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        target = link_target([*resolved, part])
        if target is None:
            resolved.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise TooManyLinks(f"too many symbolic links resolving {path}")
        if target.startswith("/"):
            resolved = []
        pending = target.split("/") + pending
    return resolved
