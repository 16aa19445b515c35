# The C module behind `signal`, used directly where importing `signal` (and enum) would
# slow down rune's start-up. Only what the project uses is declared.
from collections.abc import Callable
from types import FrameType

_Handler = Callable[[int, FrameType | None], object] | int | None

NSIG: int
SIG_DFL: int
SIG_IGN: int
SIGALRM: int
SIGCHLD: int
SIGINT: int
SIGKILL: int
SIGPIPE: int
SIGSTOP: int
SIGWINCH: int
SIGXFSZ: int
ITIMER_REAL: int

def signal(signalnum: int, handler: _Handler, /) -> _Handler: ...
def getsignal(signalnum: int, /) -> _Handler: ...
def setitimer(which: int, seconds: float, interval: float = 0.0, /) -> tuple[float, float]: ...
