"""The run launcher: what `python run.py ARGS` does around Hydra.

`command(hydra_main)` is the whole command: every job checked before anything is written
(`preflight.py`), then a directory of its own claimed for the run or the sweep, then Hydra. Every
user error and stop signal ends in one line and a non-zero exit; a stop before the run has
written anything worth keeping (a checkpoint, a record) removes what the command wrote, so the
same command can be run again.

`run_job(cfg, hydra_config)` runs one job of it. A job of a sweep that fails at run time
(divergence, a full disk, a bug) records the failure in its folder (`failure.json`), and the
sweep goes on; the command then ends with one line naming the failed jobs and exit 1. A stopped
or failed run prints the command that resumes it, quoted so that it works when pasted.
"""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import sys
import traceback
from dataclasses import dataclass, field

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from gated_pruning import objective, runlog, sweepend, toolkit
from gated_pruning.config import preflight
from gated_pruning.record import RESULTS
from gated_pruning.errors import EXIT_CODES, Diverged, UserError, stop_signals_handled, stop_signals_raise
from gated_pruning.toolkit import disk_full, fail, one_line, warn

RUN_SCRIPT = os.path.join(toolkit.ROOT, "run.py")
# what a run leaves in its directory: a directory holding any of these belongs to a run
RUN_FILES = (".hydra", RESULTS, "checkpoint.pt", "model.pt", "compact.pt2", "multirun.yaml")
# what makes a directory worth keeping after a stop: work that a rerun would redo
WORK_FILES = (RESULTS, "checkpoint.pt", "model.pt", "compact.pt2", sweepend.FAILURE)
PLAIN = re.compile(r"[A-Za-z0-9_./:@%+~-]+")  # a path that Hydra reads as written, unquoted


@dataclass
class Claim:
    """The directory this command claimed: `made` the folders it created (outermost last), or
    `before` the names that were in it already; `jobs` of a sweep."""
    path: str
    sweep: bool
    made: list = field(default_factory=list)
    before: set = field(default_factory=set)
    jobs: int = 1


_claim: Claim | None = None  # run.py's process: what it claimed (a sweep's workers hold none)


def command(hydra_main) -> int:
    """`python run.py ARGS`: check, claim, run; returns the exit status."""
    try:
        with stop_signals_handled(lambda signum, frame: sweepend.on_stop(signum, _claim)):  # from the first second: a SIGTERM is one line, not a silent death
            try:
                sys.argv[1:] = prepare(sys.argv[1:])
                hydra_main()
            except KeyboardInterrupt as e:  # a stop outside a job's own handling (before, between jobs)
                sweepend.ignore_stop_signals()
                signame = getattr(e, "signame", "SIGINT")
                if _claim is None or release_claim():
                    fail(f"stopped by {signame} before the run started; nothing was written", EXIT_CODES[signame])
                fail(f"stopped by {signame}; the sweep stops here (the jobs that ran keep their folders)",
                     EXIT_CODES[signame])
        return sweepend.status(_claim, release_claim)
    finally:
        sweepend.ignore_stop_signals()


# ---------------------------------------------------------------------------- claiming a directory

def run_files(path: str) -> list[str]:
    """The names in `path` that show it holds a run (or a sweep) already."""
    try:
        names = set(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        return [f"(unreadable: {e.strerror})"]
    return [n + ("/" if os.path.isdir(os.path.join(path, n)) else "") for n in RUN_FILES if n in names]


def claim_dir(path: str, key: str, may_rename: bool, marker: str, sweep: bool = False) -> Claim:
    """Make `path` this run's own: refuse it (or, for a time-stamped default, take `path-1`,
    `path-2`, ...) when it holds another run; the marker is created exclusively, so two runs
    started at once never share a directory."""
    for n in range(1000):
        cand = path if n == 0 else f"{path}-{n}"
        held = run_files(cand)
        if sweep and not held and os.path.isdir(cand):
            held = [f"{s}/" for s in sorted(os.listdir(cand)) if run_files(os.path.join(cand, s))]
        if os.path.exists(cand) and not os.path.isdir(cand):
            fail(f"{key}={cand}: cannot create the output directory there (a file of that name exists)")
        if not held:
            made, probe = [], os.path.abspath(cand)
            while not os.path.exists(probe):
                made.append(probe)
                probe = os.path.dirname(probe)
            before = set() if made else set(os.listdir(cand))
            try:
                os.makedirs(cand, exist_ok=True)
                if sweep:
                    open(os.path.join(cand, marker), "x").close()
                else:
                    os.mkdir(os.path.join(cand, marker))
                return Claim(cand, sweep, made, before)
            except FileExistsError:
                if not os.path.isdir(cand):
                    fail(f"{key}={cand}: cannot create the output directory there (a file of that name exists)")
                held = [marker]
            except OSError as e:
                fail(f"{key}={cand}: cannot create the output directory there ({e.strerror or e})")
        if not may_rename:
            what = "sweep" if sweep else "run"
            fail(f"{key}={cand} already holds another {what} ({', '.join(held[:4])}); nothing was written: "
                 f"choose a new directory ({key}=...) or move that one away")
    fail(f"{key}={path}: more than 1000 runs started in the same second")


def release_claim() -> bool:
    """Remove what this command wrote in the directory it claimed, if nothing there is work a
    rerun would redo (a stop in the first seconds); True when nothing of the command is left."""
    c = _claim
    if c is None:
        return False
    found = [os.path.join(d, f) for d, _, files in os.walk(c.path) for f in files if f in WORK_FILES]
    if found:
        return False
    if c.made:
        shutil.rmtree(c.path, ignore_errors=True)
        for d in c.made[1:]:  # the parents made for it, innermost first
            with contextlib.suppress(OSError):
                os.rmdir(d)
    else:
        for name in set(os.listdir(c.path)) - c.before:
            target = os.path.join(c.path, name)
            shutil.rmtree(target) if os.path.isdir(target) else os.unlink(target)
    return True


def _dir_setting(cfg, key: str) -> tuple[str, bool]:
    """(the resolved directory, whether it is a time-stamped default that may take a suffix)."""
    parent, leaf = key.rsplit(".", 1)
    raw = OmegaConf.to_container(OmegaConf.select(cfg, parent), resolve=False)[leaf]
    try:
        value = str(OmegaConf.select(cfg, key))
    except Exception as e:  # noqa: BLE001
        fail(f"{key}={raw}: {one_line(e)}")
    if not value.strip():
        fail(f"{key} is empty: give a directory")
    return value, "${now:" in str(raw)


def _with_override(argv: list[str], key: str, value: str) -> list[str]:
    out = [a for a in argv if not a.split("=", 1)[0].lstrip("+") == key]
    return out + [f"{key}={preflight.quote(value)}"]


def prepare(argv: list[str]) -> list[str]:
    """Check every job's config before any work; claim the output directory; return the
    command line for Hydra (the same, with the claimed directory set)."""
    global _claim
    plan = preflight.check(argv)
    if plan is None:
        return argv  # Hydra prints something and runs nothing (a rerun: Hydra's own experiment)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 owns the directory
        return argv + ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    if not plan.multirun:
        cfg = plan.jobs[0][1]
        path, default = _dir_setting(cfg, "hydra.run.dir")
        _claim = claim_dir(path, "hydra.run.dir", default, cfg.hydra.output_subdir or ".hydra")
        return _with_override(argv, "hydra.run.dir", _claim.path)
    subdirs = {}
    for i, (_, cfg) in enumerate(plan.jobs):
        with read_write(cfg.hydra.job), open_dict(cfg.hydra.job):
            cfg.hydra.job.num = i  # as the launcher will set it
        HydraConfig.instance().set_config(cfg)  # as the launcher does: ${hydra:...} reads it
        try:
            sub = str(cfg.hydra.sweep.subdir)
        except Exception as e:  # noqa: BLE001 - an interpolation that does not resolve for this job
            raw = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"]
            fail(f"hydra.sweep.subdir={raw}: job {i}: {one_line(e)}")
        if sub in subdirs:
            fail(f"hydra.sweep.subdir gives jobs {subdirs[sub]} and {i} the same directory "
                 f"{sub!r}: their files would mix; keep ${{hydra.job.num}} in it")
        subdirs[sub] = i
        long = next((part for part in sub.split(os.sep) if len(part.encode()) > 255), None)
        if long is not None:
            fail(f"hydra.sweep.subdir gives job {i} a folder name of {len(long.encode())} bytes ({long[:60]}...): "
                 "longer than a file system allows (255); name the jobs shorter, e.g. "
                 "hydra.sweep.subdir='${hydra.job.num}_${hydra:runtime.choices.method}_s${seed}'")
        inside = os.path.normpath(os.path.join("sweep", sub))
        if os.path.isabs(sub) or inside == "sweep" or not inside.startswith("sweep" + os.sep):
            fail(f"hydra.sweep.subdir gives job {i} the folder {sub!r}, which is not inside the sweep folder: "
                 "a job's files (results.json, checkpoint.pt, ...) must stay in its sweep, where they cannot "
                 "replace another run's; keep it a name relative to hydra.sweep.dir, without '..'")
    path, default = _dir_setting(plan.master, "hydra.sweep.dir")
    _claim = claim_dir(path, "hydra.sweep.dir", default, "multirun.yaml", sweep=True)
    _claim.jobs = len(plan.jobs)
    argv = _with_override(argv, "hydra.sweep.dir", _claim.path)
    workers = joblib_workers(plan.master.hydra.get("launcher") or {})
    if workers and len(plan.jobs) < workers:  # fewer jobs than workers: each job gets more threads
        argv = _with_override(argv, "hydra.launcher.n_jobs", str(len(plan.jobs)))
    return argv


# ---------------------------------------------------------------------------- one job

def resume_command(overrides: list[str], path: str, config_name: str = "config",
                   config_dir: str | None = None) -> str:
    """The command that continues a run from the checkpoint `path`: its overrides and
    `resume=PATH`, the path quoted for Hydra (a folder of a sweep holds `=` and `,`) and every
    word for the shell, so that it works when pasted; run.py by its full path unless the
    command is given from the project's folder; the user's `--config-dir`, if the run had one."""
    script = "run.py" if os.path.abspath(os.getcwd()) == toolkit.ROOT else RUN_SCRIPT
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "resume"]
    name = [f"--config-name={config_name}"] if config_name != "config" else []
    if config_dir:
        name.append(f"--config-dir={os.path.abspath(config_dir)}")
    value = path if PLAIN.fullmatch(path) else preflight.quote(path)
    return " ".join(shlex.quote(w) for w in ["python", script, *name, *kept, f"resume={value}"])


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def joblib_workers(launcher) -> int | None:
    """How many jobs `hydra/launcher=joblib` runs at once (its n_jobs: -1 is every core); None
    for another launcher."""
    if not str(launcher.get("_target_", "")).endswith("JoblibLauncher"):
        return None
    n = launcher.get("n_jobs")
    return _cores() if n is None else n if n > 0 else max(1, _cores() + 1 + n)


def launcher_threads(hydra_config) -> int | None:
    """Threads per job when the launcher runs several jobs at once on this machine
    (`hydra/launcher=joblib`: the cores divided among the jobs it runs at once, at least one
    each; a sweep of fewer jobs than workers gets fewer workers, see `prepare`); None otherwise
    (one job at a time: torch's default, every core)."""
    workers = joblib_workers(hydra_config.get("launcher") or {})
    return None if workers is None else max(1, _cores() // workers)


def run_job(cfg, hydra_config) -> float | None:
    """One Hydra job (see `_run_job`), its printed lines also kept in its folder's `run.log`
    (whichever launcher ran it; under torchrun, rank 0's)."""
    if os.environ.get("RANK", "0") != "0":
        return _run_job(cfg, hydra_config)
    with runlog.copied_to(os.path.join(hydra_config.runtime.output_dir, f"{hydra_config.job.name}.log")):
        return _run_job(cfg, hydra_config)


def _run_job(cfg, hydra_config) -> float | list | None:
    """One Hydra job: run the experiment and return its `objective` (objective.py) for a sweeper;
    a user error, a full disk or a stop signal is one line (with the command that resumes the
    run, where a checkpoint exists). In a sweep, a job that fails is recorded in its folder and
    the sweep goes on (None is its return value)."""
    # torch and the experiment come in here, after preflight checked every job torch-free
    from gated_pruning import checkpoint, experiment
    from gated_pruning.runtime import now, write_json
    from gated_pruning.checkpoint import Preempted

    run_dir = hydra_config.runtime.output_dir
    overrides = list(hydra_config.overrides.task)
    sweep = hydra_config.mode == RunMode.MULTIRUN
    name = ",".join(o for o in overrides if not o.startswith(("resume=", "logger"))) or "default"
    group = os.path.basename(os.path.normpath(hydra_config.sweep.dir)) if sweep else None
    later = " (the sweep stops here: later jobs did not run)" if sweep else ""
    if cfg.threads is None and launcher_threads(hydra_config):
        cfg.threads = launcher_threads(hydra_config)  # recorded in results.json as used

    user_dirs = [s.path for s in hydra_config.runtime.config_sources
                 if s.provider == "command-line" and s.schema == "file"]  # run.py --config-dir DIR

    def resume(path):
        return resume_command(overrides, path, hydra_config.job.config_name, user_dirs[0] if user_dirs else None)

    def last_checkpoint():
        saved = os.path.join(run_dir, checkpoint.FILENAME)
        return saved if os.path.isfile(saved) else cfg.get("resume")

    if sweep and os.path.exists(os.path.join(hydra_config.sweep.dir, sweepend.STOP_MARKER)):
        _unstarted(run_dir)  # the sweep was stopped before this job began: it does not
        return None
    try:
        with stop_signals_raise():
            choices = {k: v for k, v in hydra_config.runtime.choices.items() if not k.startswith("hydra")}
            results = experiment.run(cfg, run_dir, run_name=name, group=group, choices=choices)
    except Preempted as e:
        if sweep:  # the job saved; the sweep goes on to its end, where it lists what was stopped
            sweepend.mark_stopping(hydra_config.sweep.dir, e.signame)
            record = {"job": hydra_config.job.num, "overrides": overrides, "signal": e.signame,
                      "checkpoint": e.path, "resume": resume(e.path), "time": now()}
            with contextlib.suppress(OSError):
                write_json(record, os.path.join(run_dir, sweepend.STOPPED))
            warn(f"job {hydra_config.job.num} stopped by {e.signame}; checkpoint saved to {e.path}; continue with: "
                 f"{record['resume']}")
            return None
        sweepend.ignore_stop_signals()
        fail(f"stopped by {e.signame}; checkpoint saved to {e.path}; continue with: {resume(e.path)}{later}",
             EXIT_CODES.get(e.signame, 130))
    except KeyboardInterrupt as e:
        signame = getattr(e, "signame", "SIGINT")
        code = EXIT_CODES.get(signame, 130)
        saved = last_checkpoint()
        if sweep:  # stopped before training saved (or at once): the sweep ends with the others
            sweepend.mark_stopping(hydra_config.sweep.dir, signame)
            if saved:
                record = {"job": hydra_config.job.num, "overrides": overrides, "signal": signame,
                          "checkpoint": saved, "resume": resume(saved), "time": now()}
                with contextlib.suppress(OSError):
                    write_json(record, os.path.join(run_dir, sweepend.STOPPED))
            else:
                _unstarted(run_dir)
            return None
        sweepend.ignore_stop_signals()
        if saved:
            fail(f"stopped by {signame} at once; continue from the last checkpoint with: {resume(saved)}{later}", code)
        if release_claim():
            fail(f"stopped by {signame} before a checkpoint was written; nothing was kept: run the same "
                 "command again", code)
        fail(f"stopped by {signame} before a checkpoint was written: nothing to resume, run it again{later}", code)
    except Exception as e:  # noqa: BLE001 - each kind below is one line; a bug is one only in a sweep
        if isinstance(e, UserError):
            message, code = str(e), 2
        elif disk_full(e):
            saved = last_checkpoint()
            message, code = f"the disk is full: cannot write in {run_dir} ({disk_full(e).strerror}); " + (
                f"free some space, then continue from the last checkpoint with: {resume(saved)}" if saved
                else "nothing to resume: free some space and run it again"), 1
        elif sweep:
            message, code = f"{type(e).__name__}: {one_line(e, 300)}", 1
        else:
            raise  # a bug: Hydra shows where
        if not sweep:
            if isinstance(e, UserError) and not isinstance(e, Diverged):
                release_claim()  # refused before training (data, checkpoint, ...): the rerun needs its directory
            fail(message, code)
        record = {"job": hydra_config.job.num, "overrides": overrides, "error": message, "exit_code": code,
                  "time": now(), "traceback": None if isinstance(e, UserError) else traceback.format_exc()}
        path = os.path.join(run_dir, sweepend.FAILURE)
        with contextlib.suppress(OSError):  # a full disk may refuse the record too: the line stays
            write_json(record, path)
        warn(f"job {hydra_config.job.num} ({' '.join(overrides)}) failed: {message}; recorded in {path}; "
             "the sweep goes on")
        return None
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return None
    final = results["final"]
    shown = "  ".join(f"{k.replace('_top1', ' top1')} {final[k]:.4f}" for k in ("val_top1", "test_top1")
                      if final[k] is not None)
    print(f"results: {os.path.join(run_dir, RESULTS)}  {shown}", file=sys.stderr)
    return objective.value(final, cfg.objective)  # what a sweeper optimizes


def _unstarted(run_dir: str) -> None:
    """A job folder the launcher made for a job that did not run: removed, unless it holds work."""
    if os.path.isdir(run_dir) and not any(f in WORK_FILES for _, _, fs in os.walk(run_dir) for f in fs):
        shutil.rmtree(run_dir, ignore_errors=True)
