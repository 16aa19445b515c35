"""`run`: create, start, and (unless detached) wait for the container, as `runc run` does.

In the foreground rune stays the parent of the container's init, forwards the signals it
receives to it, and, when the spec asks for a terminal without a --console-socket, becomes
the terminal's other end itself: its own standard input and output are connected to the
container's pseudo-terminal.
"""

from __future__ import annotations

import os

from inclavare.errors import InclavareError
from inclavare.oci.spec import load_spec
from inclavare.runtime.create import CreateOptions, create_container
from inclavare.runtime.foreground import SignalForwarder, proxy_terminal
from inclavare.runtime.lifecycle import delete_container, destroy, start, wait_for_exit


def run_container(
    root: str, container_id: str, options: CreateOptions, detach: bool, keep: bool
) -> int:
    forwarder = None if detach else SignalForwarder()
    bundle = os.path.abspath(options.bundle or os.getcwd())
    options.bundle = bundle
    spec = load_spec(bundle)
    terminal_socket = -1
    if spec.process is not None and spec.process.terminal and not options.console_socket:
        if detach:
            raise InclavareError(
                "cannot allocate a terminal for a detached container without --console-socket"
            )
        import _socket

        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        terminal_socket = ours.detach()
        options.console_socket_fd = theirs.detach()
    try:
        container = create_container(root, container_id, options, spec)
    finally:
        if options.console_socket_fd >= 0:
            os.close(options.console_socket_fd)
    master = -1
    try:
        if terminal_socket >= 0:
            from inclavare.runtime.console import receive_fd

            master = receive_fd(terminal_socket)
            os.close(terminal_socket)
        start(container)
    except BaseException:
        destroy(container)
        raise
    if forwarder is None:
        return 0
    forwarder.forward_to(container.pid)
    code = proxy_terminal(master, container.pid) if master >= 0 else wait_for_exit(container)
    if container.record.get("enclave", {}).get("epc_limit_mib") is not None:
        from inclavare import log
        from inclavare.runtime.enclave import epc_budget_exceeded

        reason = epc_budget_exceeded(container)
        if reason is not None:
            log.error(reason)
    if not keep:
        delete_container(container, force=True)
    return code
