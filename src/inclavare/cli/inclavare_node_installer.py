"""`inclavare-node-installer`: prepare a Kubernetes node for the `rune` RuntimeClass, or undo it.

    inclavare-node-installer install|uninstall [--containerd-config PATH] [--host-root DIR]
                             [--payload DIR] [--dry-run] [--no-restart]
                             [--restart-command COMMAND]

install copies the payload (rune, containerd-shim-rune-v2 and the other programs, as the
installer image carries them in /opt/inclavare) to the node's /opt/inclavare, links its bin/
programs into /usr/local/bin, creates the sim TEE's platform directory, adds the `rune`
runtime to containerd's config.toml (format version 2 for containerd 1.x, 3 for 2.x) without
touching the rest, and restarts containerd (putting the old config back if it does not come
back). uninstall removes the runtime, the links and /opt/inclavare. Paths are the node's, seen
under --host-root (the node's / mounted in the installer's container). Running either twice
changes nothing the second time. Exit codes: 0 done, 2 refused (nothing was changed).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from inclavare.errors import InclavareError

RESTART_IN_HOST = (
    "nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl restart containerd"
)
RESTART_HERE = "systemctl restart containerd"


def build_parser() -> argparse.ArgumentParser:
    from inclavare.k8s.installer import CONFIG_PATH

    parser = argparse.ArgumentParser(
        prog="inclavare-node-installer",
        description="Add (or remove) the rune runtime on a Kubernetes node.",
    )
    parser.add_argument("action", choices=("install", "uninstall"))
    parser.add_argument(
        "--containerd-config", default=CONFIG_PATH, help=f"as the node sees it ({CONFIG_PATH})"
    )
    parser.add_argument("--host-root", default="/", help="where the node's / is mounted (/)")
    parser.add_argument(
        "--payload", help="a directory with bin/ and what its programs need, for /opt/inclavare"
    )
    parser.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME") or None,
        help="label this node inclavare.io/rune=true once installed, remove the label before "
        "uninstalling (default: $NODE_NAME; no labelling without one)",
    )
    parser.add_argument("--api-server", help=argparse.SUPPRESS)
    parser.add_argument("--credentials", help=argparse.SUPPRESS)
    parser.add_argument("--dry-run", action="store_true", help="say what would change")
    parser.add_argument("--no-restart", action="store_true", help="do not restart containerd")
    parser.add_argument(
        "--restart-command",
        help=f"how to restart containerd (default: {RESTART_HERE!r}, or through nsenter into "
        "PID 1's namespaces with --host-root)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from inclavare.k8s.installer import Installer

    if args.no_restart or args.dry_run:
        restart = None
    elif args.restart_command:
        restart = shlex.split(args.restart_command)
    else:
        restart = shlex.split(RESTART_HERE if args.host_root == "/" else RESTART_IN_HOST)
    try:
        installer = Installer(
            args.host_root,
            args.containerd_config,
            args.payload,
            dry_run=args.dry_run,
            restart=restart,
        )
        if args.action == "install":
            installer.install()
            _label(args, "true")
        else:
            _label(args, None)
            installer.uninstall()
        return 0
    except InclavareError as error:
        print(f"inclavare-node-installer {args.action}: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(
            f"inclavare-node-installer {args.action}: {error.filename or ''}: {error.strerror}",
            file=sys.stderr,
        )
        return 2


def _label(args: argparse.Namespace, value: str | None) -> None:
    from inclavare.k8s.installer import NODE_LABEL
    from inclavare.k8s.nodelabel import SERVICE_ACCOUNT, label_node

    if args.node_name is None:
        print("node not labelled: no --node-name (or NODE_NAME)")
        return
    if args.dry_run:
        print(f"node {args.node_name}: label {NODE_LABEL} would be set to {value}")
        return
    label_node(
        args.node_name,
        {NODE_LABEL: value},
        args.api_server,
        args.credentials or SERVICE_ACCOUNT,
    )
    print(f"node {args.node_name}: label {NODE_LABEL}={value or '(removed)'}")


if __name__ == "__main__":
    sys.exit(main())
