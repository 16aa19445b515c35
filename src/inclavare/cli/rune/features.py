"""rune features: what this rune supports on this host, as the runtime-spec's features
document (the JSON that `runc features` prints)."""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from inclavare.cli.goflags import Options
    from inclavare.cli.rune import Context

USAGE = ""
ARGUMENTS = (0, 0)
FLAGS: list[object] = []


def features_document() -> dict[str, Any]:
    import os

    from inclavare.cgroups import features as cgroup_features
    from inclavare.linux.constants import (
        CAPABILITIES,
        MOUNT_OPTIONS,
        NAMESPACES,
        PROPAGATION_OPTIONS,
    )
    from inclavare.linux.seccomp import features as seccomp_features
    from inclavare.oci.spec import HOOK_KINDS
    from inclavare.runtime.container import OCI_VERSION

    namespaces = [
        kind for kind, (_, name) in NAMESPACES.items() if os.path.exists(f"/proc/self/ns/{name}")
    ]
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": list(HOOK_KINDS),
        "mountOptions": sorted([*MOUNT_OPTIONS, *PROPAGATION_OPTIONS]),
        "linux": {
            "namespaces": namespaces,
            "capabilities": list(CAPABILITIES),
            "cgroup": cgroup_features(),
            "seccomp": seccomp_features(),
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
        },
        "annotations": {
            "org.opencontainers.runc.version": "rune",
            "io.inclavare.enclave.types": "sim,intelSgx",
        },
    }


def run(context: Context, options: Options, args: list[str]) -> int:
    from inclavare import lightjson

    sys.stdout.write(lightjson.dumps(features_document(), indent="    ") + "\n")
    return 0
