"""What the shim keeps in a container's bundle, for the `delete` action run after the shim is
gone: which runtime program and state root the container was created with."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_BINARY = "rune"
# as containerd's runc shim keeps runc's state under /run/containerd/runc/<namespace>
ROOT_DIRECTORY = "/run/containerd/rune"


def write_options(bundle: str, binary: str, root: str) -> None:
    """What `delete` (run when the shim is gone) needs to find the container."""
    from inclavare import lightjson

    with open(os.path.join(bundle, "options.json"), "w") as options:
        options.write(lightjson.dumps({"binary_name": binary, "root": root}))


def read_options(bundle: str) -> dict[str, Any]:
    from inclavare import lightjson

    try:
        with open(os.path.join(bundle, "options.json")) as options:
            found = lightjson.loads(options.read())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
