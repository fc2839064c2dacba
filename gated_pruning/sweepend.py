"""The end of a sweep: a stop signal to `run.py` forwarded to the jobs that run (each saves a
checkpoint and stops), the marker that starts no other job, and the one line that sums up a
stopped sweep (the commands that resume its jobs) or the jobs that failed."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import sys

from gated_pruning.errors import EXIT_CODES, Interrupted
from gated_pruning.record import RESULTS
from gated_pruning.toolkit import fail

FAILURE = "failure.json"  # a sweep job's record of its failure
STOPPED = "stopped.json"  # a sweep job's record of a stop signal: its checkpoint and the command that resumes it
STOP_MARKER = ".stopping"  # in a sweep folder: a stop signal came, no job starts any more


def on_stop(signum, c) -> None:
    """A stop signal to `run.py`'s own process, whose claimed folder is `c` (None before one is
    claimed). Before a sweep's jobs run: stop at once
    (`Interrupted`). Once they run: every running job is told to save and stop (a SIGTERM to the
    launcher's worker processes, as a stop to the whole process group would), no job starts any
    more (the sweep folder's STOP_MARKER), and the sweep ends with the list of the stopped jobs and
    the commands that resume them; a second signal stops at once."""
    name = signal.Signals(signum).name
    if c is None or not c.sweep or not os.path.isdir(c.path) or os.path.exists(os.path.join(c.path, STOP_MARKER)):
        raise Interrupted(name)
    mark_stopping(c.path, name)
    workers = worker_processes()  # those running a job (the others will not start one: the marker)
    for pid in workers:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)  # SIGTERM, not SIGINT: after a Ctrl-C to the group, a second SIGINT would not save
    print(f"warning: {name}: the running jobs save a checkpoint and stop; no other job starts (a second "
          f"{name} stops at once)", file=sys.stderr, flush=True)


def mark_stopping(sweep_dir: str, signame: str) -> None:
    """Mark a sweep as stopping (by `signame`): jobs that have not started will not."""
    with contextlib.suppress(OSError):
        with open(os.path.join(sweep_dir, STOP_MARKER), "x") as f:
            f.write(signame)


def worker_processes() -> list[int]:
    """The processes this one started that are running a job (joblib's loky workers, submitit's
    jobs): its children that catch SIGTERM (a job's handler is installed; an idle worker, which
    would die of it, does not); [] where /proc cannot tell."""
    out, me = [], os.getpid()
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/status") as f:
                    caught = next(int(ln.split()[1], 16) for ln in f if ln.startswith("SigCgt:"))
            except (OSError, ValueError, IndexError, StopIteration):
                continue
            if ppid == me and caught >> (signal.SIGTERM - 1) & 1:
                out.append(int(entry))
    return out


def ignore_stop_signals() -> None:
    """The run has stopped and says so: a further Ctrl-C while the interpreter shuts down would
    only add a traceback after the one line."""
    for s in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(s, signal.SIG_IGN)


def status(c, release_claim) -> int:
    """After a sweep (`c` the claimed folder; `release_claim()` removes it when nothing was kept):
    for a stopped sweep, one `error:` line listing the jobs it stopped and the
    commands that resume them (exit 130/143; nothing kept when no job had written work); else one
    `error:` line naming the jobs that failed, and exit status 1; else 0."""
    if c is None or not c.sweep:
        return 0
    marker = os.path.join(c.path, STOP_MARKER)
    if os.path.exists(marker):
        with open(marker) as f:
            signame = f.read().strip() or "SIGTERM"
        code = EXIT_CODES.get(signame, 130)
        ignore_stop_signals()
        stopped = []
        for path in sorted(glob.glob(os.path.join(glob.escape(c.path), "*", STOPPED))):
            with contextlib.suppress(OSError, ValueError):
                with open(path) as f:
                    stopped.append(json.load(f))
        os.unlink(marker)
        if not stopped and release_claim():
            fail(f"stopped by {signame} before a job saved anything; nothing was kept: run the same command again",
                 code)
        done = len(glob.glob(os.path.join(glob.escape(c.path), "*", RESULTS)))
        if not stopped:
            fail(f"stopped by {signame}; {done} of {c.jobs} jobs finished, the others did not start (run them "
                 "again: the sweep folder keeps the finished ones)", code)
        lines = "; ".join(f"job {r['job']}: {r['resume']}" for r in sorted(stopped, key=lambda r: r['job']))
        fail(f"stopped by {signame}: {len(stopped)} job(s) saved a checkpoint, continue each with: {lines}; "
             f"{done} of {c.jobs} jobs finished", code)
    failed = []
    for path in sorted(glob.glob(os.path.join(glob.escape(c.path), "*", FAILURE))):
        try:
            with open(path) as f:
                failed.append((path, json.load(f)))
        except (OSError, ValueError):
            failed.append((path, {"job": "?", "overrides": [os.path.basename(os.path.dirname(path))],
                                  "error": "its failure.json is unreadable"}))
    if not failed:
        return 0
    failed.sort(key=lambda pf: (str(pf[1].get("job")).zfill(6)))
    total = max(c.jobs, len(glob.glob(os.path.join(glob.escape(c.path), "*", RESULTS))) + len(failed))
    done = total - len(failed)
    rest = f"the other {done} finished" if done else "no job finished"
    if len(failed) == 1:
        path, rec = failed[0]
        print(f"error: job {rec['job']} of {total} ({' '.join(rec['overrides'])}) failed: {rec['error']} "
              f"(recorded in {path}); {rest}", file=sys.stderr)
    else:
        names = ", ".join(f"job {rec['job']} ({' '.join(rec['overrides'])})" for _, rec in failed)
        print(f"error: {len(failed)} of {total} jobs failed: {names}; each one's error is in its folder's "
              f"{FAILURE}; {rest}", file=sys.stderr)
    return 1
