"""Errors a user can fix (`run.py` prints their one-line message and exits non-zero), and the
stop signals (SIGINT, SIGTERM) that end a run: `Interrupted`, the exit status each gives, and the
handlers' install/restore."""

import contextlib
import signal
import sys


EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal's number, as a shell reports it


class UserError(Exception):
    """Bad input: the message names what is wrong and what is allowed."""


class ConfigError(UserError):
    """A config value outside its allowed range."""


class DataError(UserError):
    """The data set is missing or unreadable; the message says how to supply it."""


class CheckpointError(UserError):
    """A checkpoint that cannot be used: missing, corrupt, or from another model or config."""


class Diverged(UserError):
    """The training loss became NaN or infinite."""


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM) that ends the run at once, without a new checkpoint."""

    def __init__(self, signame: str = "SIGINT"):
        super().__init__(signame)
        self.signame = signame


@contextlib.contextmanager
def stop_signals_handled(handler):
    """SIGINT and SIGTERM go to `handler(signum, frame)` inside the block; the previous handlers
    come back after it. Outside the main thread, where Python cannot install handlers, the
    signals are left alone."""
    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


_taken: list = []  # the stop signals the raising handler took in the current block


@contextlib.contextmanager
def stop_signals_raise():
    """SIGINT and SIGTERM stop at once with `Interrupted` inside the block (training replaces
    this by its own handler, which first finishes the step and saves a checkpoint). The signal is
    also noted for `raise_if_stopped`: a handler that runs inside a callback (a weakref's, such as
    importlib's module locks) has its exception printed and dropped by Python, "Exception ignored"."""
    def handler(signum, frame):
        _taken.append(signal.Signals(signum).name)
        raise Interrupted(_taken[-1])

    _taken.clear()
    try:
        with stop_signals_handled(handler):
            yield
    finally:
        _taken.clear()


def raise_if_stopped() -> None:
    """Before a run writes what it delivers: a stop signal whose `Interrupted` Python dropped
    (see `stop_signals_raise`) stops the run here, so that nothing is written after it."""
    if _taken:
        raise Interrupted(_taken[0])


class StopRequest:
    """A stop asked for while training: inside `handled()`, the first SIGTERM or SIGINT (Ctrl-C)
    is noted (`signum`; the loop finishes its step, saves a checkpoint and stops), a second SIGINT
    stops at once (`Interrupted`). `announce`: say so on stderr (rank 0 only)."""

    def __init__(self, announce: bool = True):
        self.signum, self.announce = None, announce

    @property
    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGTERM).name

    def handler(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise Interrupted("SIGINT")
        if self.signum is None and self.announce:
            print(f"warning: {signal.Signals(signum).name}: finishing this step, then saving a checkpoint"
                  + (" (Ctrl-C again stops at once)" if signum == signal.SIGINT else ""), file=sys.stderr, flush=True)
        self.signum = signum

    @contextlib.contextmanager
    def handled(self):
        with stop_signals_handled(self.handler):
            yield
