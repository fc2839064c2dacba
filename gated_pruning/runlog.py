"""A run's printed lines, also kept in its folder's `run.log`.

The code prints (epochs, warnings, the pruning line, errors); Hydra's `run.log` holds only what
goes through `logging`, so a run started in the background, or by a launcher whose workers'
output goes nowhere (joblib, submitit), kept none of it. `copied_to(path)` copies everything
written to stdout and stderr into the file while it lasts, each write flushed at once (a killed
run keeps its last line). Progress-bar redraws (writes holding a carriage return) stay on the
terminal only.
"""
from __future__ import annotations

import contextlib
import sys


class _Tee:
    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        if "\r" not in text and not self._log.closed:
            with contextlib.suppress(OSError, ValueError):  # a full disk must not stop the run here
                self._log.write(text)
                self._log.flush()
        return n

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the terminal's
        return getattr(self._stream, name)


@contextlib.contextmanager
def copied_to(path: str):
    """While inside: stdout and stderr also appended to `path` (created if missing)."""
    try:
        log = open(path, "a", encoding="utf-8", errors="replace")
    except OSError:  # an unwritable folder: the run goes on, printing as before
        yield
        return
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
        log.close()
