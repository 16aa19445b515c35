"""Running the runtime-spec's hooks: the container state on standard input, a timeout each.

Which failures are fatal is the caller's decision (the runtime-spec makes prestart,
createRuntime, createContainer and startContainer failures fatal, and poststart and poststop
failures warnings); this module reports a failure as `HookError` naming the hook and why.
"""

from __future__ import annotations

from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.oci.spec import Hook

_OUTPUT_LIMIT = 400


class HookError(InclavareError):
    """A hook could not be run, failed, or timed out."""


def _one_line(output: bytes) -> str:
    text = output.decode(errors="replace").strip().replace("\n", " | ")
    return text if len(text) <= _OUTPUT_LIMIT else text[:_OUTPUT_LIMIT] + "..."


def run_hook(hook: Hook, kind: str, index: int, state_json: str) -> None:
    import subprocess

    argv = hook.args or [hook.path]
    name = f"{kind} hook #{index} ({hook.path})"
    try:
        completed = subprocess.run(
            argv,
            executable=hook.path,
            input=state_json.encode(),
            env=dict(entry.split("=", 1) for entry in hook.env),
            capture_output=True,
            timeout=hook.timeout,
            close_fds=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HookError(f"{name} timed out after {hook.timeout}s") from None
    except OSError as error:
        raise HookError(f"{name}: cannot execute: {error.strerror}") from None
    if completed.returncode != 0:
        if completed.returncode < 0:
            how = f"killed by signal {-completed.returncode}"
        else:
            how = f"exit status {completed.returncode}"
        output = _one_line(completed.stderr or completed.stdout)
        raise HookError(f"{name} failed: {how}" + (f": {output}" if output else ""))


def run_hooks(hooks: list[Hook], kind: str, state_json: str) -> None:
    """Run each hook in order; the first failure stops the rest and raises HookError."""
    for index, hook in enumerate(hooks):
        run_hook(hook, kind, index, state_json)
