"""rune spec: write a default config.json into the bundle, as `runc spec` does."""

from __future__ import annotations

import os

from inclavare.cli.goflags import Flag
from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context

USAGE = ""
DESCRIPTION = """\
   Writes config.json for a container that runs "sh" on a terminal, with its root filesystem
   in the bundle's "rootfs" directory. Edit it, then "rune run ID" in the bundle."""
ARGUMENTS = (0, 0)
FLAGS = [
    Flag("bundle, b", str, "path to the root of the bundle directory"),
    Flag("rootless", bool, "generate a configuration for a rootless container"),
]


def run(context: Context, options: Options, args: list[str]) -> int:
    from inclavare import lightjson
    from inclavare.oci.default_spec import default_spec, make_rootless

    spec = default_spec()
    if options.rootless:
        spec = make_rootless(spec, os.getuid(), os.getgid())
    path = os.path.join(options.bundle, "config.json")
    if os.path.exists(path):
        raise InclavareError(f"File {path} exists. Remove it first")
    try:
        with open(path, "x") as config_file:
            config_file.write(lightjson.dumps(spec, indent="\t"))
    except OSError as error:
        raise InclavareError(f"write {path}: {error.strerror}") from None
    return 0
