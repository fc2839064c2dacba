"""What `run.py` does around Hydra: check every input of every job before Hydra writes anything,
give each run a directory of its own, turn user errors and stop signals into one line and a
non-zero exit, and name each job of a sweep.

`preflight(argv)` composes the config of every job (every point of a `-m` sweep) exactly as Hydra
will, checks the command-line keys (misspelled keys get the closest valid one), every value
(gated_pruning.config.RULES and its cross-key checks), the device, the checkpoint to resume and the
data files, and only then claims the output directory. It returns the command line to give Hydra,
with that directory fixed, so that Hydra and the check agree on it.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import shlex
import signal
import sys

from gated_pruning.errors import Interrupted, UserError, stop_signals_handled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF_DIR = os.path.join(ROOT, "conf")

# what a run leaves in its directory: a directory holding any of these belongs to a run
RUN_FILES = (".hydra", "results.json", "checkpoint.pt", "model.pt", "compact.pt2", "multirun.yaml")
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line `error: ...` for a bad flag (argparse prints usage first)."""

    def error(self, message):
        fail(f"{message} (see {self.prog} --help)")


def arg(rule, flag: str):
    """An argparse `type` that reads a number (or text) and checks it against a config Rule."""
    from gated_pruning.config import show

    def parse(text: str):
        value = text
        for convert in (int, float):
            try:
                value = convert(text)
                break
            except ValueError:
                pass
        problem = rule.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{flag} {show(value)} {problem}")
        return value

    parse.__name__ = rule.allowed()  # argparse names the type in "invalid <type> value"
    return parse


def group_options(conf_dir: str = CONF_DIR) -> dict:
    """{group: [options]} for every config group directory under conf/."""
    out = {}
    for group in sorted(os.listdir(conf_dir)):
        path = os.path.join(conf_dir, group)
        if os.path.isdir(path):
            out[group] = sorted(f[:-5] for f in os.listdir(path) if f.endswith(".yaml"))
    return out


def check_overrides(args: list[str], conf_dir: str = CONF_DIR) -> None:
    """Exit with one line if a command-line override picks a config group option that does not
    exist (Hydra's own message for this spans a dozen lines)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    candidates = [a for a in args if not a.startswith("-") and "=" in a]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except Exception as e:  # noqa: BLE001 - the grammar's own message, on one line
        fail(f"cannot parse the overrides: {one_line(e)}")
    groups = group_options(conf_dir)
    for ov in overrides:
        key = ov.key_or_group
        if key not in groups or ov.is_delete():
            continue
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.get_value_element_as_str()]
        for value in values:
            if value not in groups[key] and value != "null":
                fail(f"{key}={value} is not an option of config group '{key}' "
                     f"(allowed: {', '.join(groups[key])})")


# ---------------------------------------------------------------------------- preflight

def _hydra_args(argv: list[str]):
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message):
        if "unrecognized arguments" in message and "=" in message:
            message += (" (flags such as -m go before the key=value overrides, and overrides take "
                        "no leading dashes; see python run.py --help)")
        fail(message)

    parser.error = error
    return parser.parse_args(argv)


def _quote(value: str) -> str:
    """A Hydra override value that stays a literal string (commas, spaces, quotes, ${): in
    Hydra's quoted strings only backslashes before a quote or at the end are escapes."""
    import re

    value = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)
    return "'" + value.replace("'", "\\'").replace("${", "\\${") + "'"


_SHARED: dict = {}  # configs of group choices alone, read and never changed: shared by calls


class _Composer:
    """Hydra's own composition of a job's config, with one-line errors."""

    def __init__(self, hydra, config_name: str, prefix: str = "", conf_dir: str = ""):
        self.hydra, self.config_name, self.prefix = hydra, config_name, prefix
        self.cache = {}
        self.shared_key = (conf_dir, config_name)

    def __call__(self, overrides: list[str], multirun: bool = False, validate: bool = True,
                 shared: bool = False):
        from hydra.types import RunMode

        key = (tuple(overrides), multirun, validate)
        if shared:
            if (self.shared_key, key) not in _SHARED:
                _SHARED[self.shared_key, key] = self(overrides, multirun, validate)
            return _SHARED[self.shared_key, key]
        if key not in self.cache:
            try:
                self.cache[key] = self.hydra.compose_config(
                    self.config_name, list(overrides), run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN,
                    validate_sweep_overrides=validate)
            except Exception as e:  # noqa: BLE001 - Hydra's message, on one line
                cause = e.__cause__
                why = f" ({one_line(cause, 200)})" if cause is not None and str(cause) not in str(e) else ""
                fail(self.prefix + one_line(e) + why)
        return self.cache[key]


def _job_part(cfg):
    """The job's config without the `hydra` node (what the task function receives)."""
    from omegaconf import OmegaConf

    return OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])


def _leaves(cfg) -> set:
    from omegaconf import OmegaConf

    from gated_pruning.config import flatten

    return set(flatten(OmegaConf.to_container(_job_part(cfg), resolve=False)))


def _check_keys(overrides: list[str], compose, prefix: str = ""):
    """Every key the overrides set exists for the options they pick: a misspelled key is
    named with the closest valid one; `+key=` (add a key) and `~key` (delete one) are refused
    for config values, since the code reads exactly the keys conf/ defines. Returns the config
    of the group choices alone, whose keys a job must still hold after its overrides. A sweep
    over a group's options is left out, as Hydra leaves it out of a sweep's main config (each
    job is checked with its own option)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from gated_pruning.config import RULES

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # noqa: BLE001
        fail(f"{prefix}cannot parse the overrides: {one_line(e)}")
    repo = compose.hydra.config_loader.repository
    groups, values = [], []
    for o in parsed:
        if o.key_or_group == "hydra" or o.key_or_group.startswith("hydra."):
            groups.append(o.input_line)  # Hydra checks its own keys
        elif o.package is not None or repo.group_exists(o.key_or_group):
            if not o.is_sweep_override():
                groups.append(o.input_line)
        else:
            values.append(o)
    base = compose(groups, shared=True)
    keys = sorted(_leaves(base))
    sections = sorted({k.rsplit(".", 1)[0] for k in keys if "." in k})
    choices = base.hydra.runtime.choices
    group_names = sorted(k for k in choices if not k.startswith("hydra"))
    missing = object()
    for ov in values:
        key, line = ov.key_or_group, ov.input_line
        exists = OmegaConf.select(base, key, default=missing) is not missing
        if ov.is_delete():
            fail(f"{prefix}{line}: removing a config key is not supported (the code reads every "
                 f"key); set {key}=VALUE instead")
        if ov.is_add() and exists:
            fail(f"{prefix}{line}: {key} exists already; write {key}=... without the +")
        if exists:
            continue
        top = key.split(".")[0]
        if key in RULES and top in choices:
            fail(f"{prefix}{line}: {top}={choices[top]} has no key {key[len(top) + 1:]} (nothing "
                 "would read it)")
        close = difflib.get_close_matches(key, keys + sections + group_names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "python run.py --cfg job lists every key"
        what = "config key" if not ov.is_add() else "config key (a + adds a key nothing reads)"
        fail(f"{prefix}{line}: no such {what}; {hint}")
    return base


def _job_problems(cfg, base_leaves: set) -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    from gated_pruning.config import problems, resolved

    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} in values
    gone = sorted(base_leaves - _leaves(cfg))
    if gone:
        return [f"{gone[0]} is missing: an override replaced the section that holds it"]
    return problems(resolved(_job_part(cfg)))


def _environment_problems(c: dict, local: bool, cache: dict) -> str | None:
    """Checks that look outside the config: the device, the checkpoint to resume, data files."""
    from gated_pruning.config import check_device
    from gated_pruning.errors import UserError

    try:
        check_device(c["device"], need_available=local)
        if c.get("resume"):
            from omegaconf import OmegaConf

            from gated_pruning import checkpoint
            from gated_pruning.config import fingerprint

            path = checkpoint.resolve(c["resume"])
            if path not in cache:
                cache[path] = checkpoint.load(path)
            checkpoint.check_compatible(cache[path].get("fingerprint", {}), fingerprint(OmegaConf.create(c)), path)
        d = c["dataset"]
        if d["name"] != "synthetic":
            from gated_pruning.data import locate_cifar

            locate_cifar(d["name"], d["root"], d["download"])
    except UserError as e:
        return str(e)
    return None


def run_files(path: str) -> list[str]:
    """The names in `path` that show it holds a run (or a sweep) already."""
    try:
        names = set(os.listdir(path))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        return []
    except OSError as e:
        return [f"(unreadable: {e.strerror})"]
    return [n + ("/" if os.path.isdir(os.path.join(path, n)) else "") for n in RUN_FILES if n in names]


def claim_dir(path: str, key: str, may_rename: bool, marker: str, sweep: bool = False) -> str:
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
            try:
                os.makedirs(cand, exist_ok=True)
                if sweep:
                    open(os.path.join(cand, marker), "x").close()
                else:
                    os.mkdir(os.path.join(cand, marker))
                return cand
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


def _dir_setting(cfg, key: str) -> tuple[str, bool]:
    """(the resolved directory, whether it is a time-stamped default that may take a suffix)."""
    from omegaconf import OmegaConf

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
    return out + [f"{key}={_quote(value)}"]


def preflight(argv: list[str], conf_dir: str = CONF_DIR) -> list[str]:
    """Check every job's config before any work; claim the output directory; return the
    command line for Hydra (the same, with the claimed directory set)."""
    args = _hydra_args(argv)
    commands = args.run + args.multirun + (args.cfg is not None) + args.shell_completion + (args.info is not None)
    if commands > 1:  # Hydra's own checks, which it reports with a traceback
        fail("only one of --run, --multirun, --cfg, --info and --shell-completion can be given")
    if args.resolve and not (args.cfg or args.help):
        fail("--resolve only goes with --cfg or --help")
    if args.experimental_rerun is not None and not os.path.isfile(args.experimental_rerun):
        fail(f"--experimental-rerun {args.experimental_rerun}: no such file (give a run's .hydra/config.pickle)")
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion \
            or args.experimental_rerun:
        return argv  # Hydra prints something and runs nothing (a rerun: Hydra's own experiment)
    check_overrides(args.overrides, conf_dir)
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if args.config_path is not None:
        conf_dir = os.path.join(os.path.dirname(conf_dir), args.config_path)
    overrides = list(args.overrides)
    if args.config_dir is not None:
        if not os.path.isdir(args.config_dir):
            fail(f"--config-dir={args.config_dir}: no such directory")
        overrides.append(f"hydra.searchpath=[{_quote('file://' + os.path.abspath(args.config_dir))}]")
    if not os.path.isdir(conf_dir):
        fail(f"--config-path={args.config_path}: no such directory ({conf_dir})")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=os.path.abspath(conf_dir), job_name="run", version_base="1.3"):
            compose = _Composer(GlobalHydra.instance().hydra, args.config_name or "config",
                                conf_dir=os.path.abspath(conf_dir))
            master, configs, multirun = _check_jobs(compose, overrides, args.multirun)
            if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 owns the directory
                return argv + ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
            return _claim_output(master, configs, multirun, argv)
    finally:
        HydraConfig.instance().cfg = None


def _check_jobs(compose, overrides: list[str], multirun: bool):
    """(the main config, [(prefix, config)] of every job, whether it is a sweep), every job
    checked: first keys and values (fast, no torch), then what lies outside the config (device,
    checkpoint, data)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from gated_pruning.config import resolved

    base = _check_keys(overrides, compose)  # typos first, in the words of this project
    multirun = multirun or any(o.replace(" ", "") == "hydra.mode=MULTIRUN" for o in overrides)
    if not multirun:  # one job: its config is the main config (a sweep a,b is refused, in Hydra's words)
        master = compose(overrides)
        found = _job_problems(master, _leaves(base))
        if found:
            fail(found[0])
        configs = [("", master)]
    else:
        master = compose(overrides, multirun=True, validate=False)
        # as written: iterating the ListConfig would resolve a ${now:...} in an override
        hydra_overrides = OmegaConf.to_container(master.hydra.overrides.hydra, resolve=False)
        task = OmegaConf.to_container(master.hydra.overrides.task, resolve=False)
        if str(master.hydra.sweeper.get("_target_")).endswith("BasicSweeper"):  # Hydra's own split
            params = [f"{k}={v}" for k, v in (master.hydra.sweeper.get("params") or {}).items()]
            try:
                jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params + task), None)[0]
            except Exception as e:  # noqa: BLE001
                fail(one_line(e))
        else:  # another sweeper picks the points itself: check what all of them share
            jobs = [[o.input_line for o in OverridesParser.create().parse_overrides(task)
                     if not o.is_sweep_override()]]
        configs = []
        for i, job in enumerate(jobs):
            prefix = f"job {i} of {len(jobs)} ({' '.join(job)}): " if len(jobs) > 1 else ""
            compose.prefix = prefix
            base = _check_keys(hydra_overrides + list(job), compose, prefix)
            cfg = compose(hydra_overrides + list(job))
            found = _job_problems(cfg, _leaves(base))
            if found:
                fail(prefix + found[0])
            configs.append((prefix, cfg))
    launcher = str(master.hydra.launcher.get("_target_", ""))
    local = not multirun or launcher.endswith(("BasicLauncher", "LocalLauncher", "JoblibLauncher"))  # a GPU here counts
    cache = {}
    for prefix, cfg in configs:
        found = _environment_problems(resolved(_job_part(cfg)), local, cache)
        if found:
            fail(prefix + found)
    return master, configs, multirun


def _claim_output(master, configs, multirun: bool, argv: list[str]) -> list[str]:
    """Claim the run (or sweep) directory; only now, so that a refused run writes nothing."""
    from omegaconf import open_dict, read_write

    if not multirun:
        cfg = configs[0][1]
        path, default = _dir_setting(cfg, "hydra.run.dir")
        path = claim_dir(path, "hydra.run.dir", default, cfg.hydra.output_subdir or ".hydra")
        return _with_override(argv, "hydra.run.dir", path)
    subdirs = {}
    for i, (_, cfg) in enumerate(configs):
        with read_write(cfg.hydra.job), open_dict(cfg.hydra.job):
            cfg.hydra.job.num = i  # as the launcher will set it
            sub = str(cfg.hydra.sweep.subdir)
        if sub in subdirs:
            fail(f"hydra.sweep.subdir gives jobs {subdirs[sub]} and {i} the same directory "
                 f"{sub!r}: their files would mix; keep ${{hydra.job.num}} in it")
        subdirs[sub] = i
    path, default = _dir_setting(master, "hydra.sweep.dir")
    path = claim_dir(path, "hydra.sweep.dir", default, "multirun.yaml", sweep=True)
    return _with_override(argv, "hydra.sweep.dir", path)


# ---------------------------------------------------------------------------- the tools

def readable_file(path: str, what: str = "") -> str:
    """`path` if it is a file this process can read, else a one-line UserError saying which."""
    try:
        os.stat(path)
    except PermissionError:
        raise UserError(f"{path}: permission denied (a folder on the way cannot be searched)") from None
    except OSError:
        raise UserError(f"{path} not found{what}") from None
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder, not a file{what}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path}: permission denied (the file is not readable)")
    return path


def readable_dir(path: str, what: str = "") -> str:
    """`path` if it is a folder this process can read, else a one-line UserError saying which."""
    name = f"{what} {path}" if what else path
    try:
        os.stat(path)
    except PermissionError:
        raise UserError(f"{name}: permission denied (a folder on the way cannot be searched)") from None
    except OSError:
        raise UserError(f"{name}: no such folder") from None
    if not os.path.isdir(path):
        raise UserError(f"{name} is a file, not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"{name}: permission denied (the folder is not readable)")
    return path


@contextlib.contextmanager
def staged(out: str, flag: str = "--out", replace: bool = False):
    """Yield an empty temporary folder next to `out`, where a tool writes everything; it becomes
    `out` only when the tool succeeds, and is removed on any error or stop signal, so a failed
    tool leaves no partial output. `out` must not exist (`replace`: files in it are replaced)."""
    import shutil
    import tempfile

    out = os.path.abspath(out)
    if os.path.exists(out) and not (replace and os.path.isdir(out)):
        if replace:
            raise UserError(f"{flag} {out} is a file, not a folder")
        raise UserError(f"{out} exists already; pass another {flag} (nothing is overwritten)")
    parent, created = os.path.dirname(out), []
    probe = parent
    while not os.path.exists(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    except OSError as e:
        raise UserError(f"{flag} {out}: cannot write there ({e.strerror or e})") from None
    ok = False
    try:
        yield tmp
        if replace and os.path.isdir(out):
            for name in os.listdir(tmp):
                os.replace(os.path.join(tmp, name), os.path.join(out, name))
        else:
            try:
                os.rename(tmp, out)
            except OSError as e:
                raise UserError(f"{out}: cannot create it ({e.strerror or e}); nothing was written") from None
        ok = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            for d in created:  # folders made for the output, outermost last
                with contextlib.suppress(OSError):
                    os.rmdir(d)


def run_tool(body, args) -> int:
    """A tool's body, with one `error:` line and exit 2 for a bad input, 130 (SIGINT) or 143
    (SIGTERM) for a stop signal."""
    try:
        with stop_signals_raise():
            return body(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signame = getattr(e, "signame", "SIGINT")
        print(f"error: stopped by {signame}; nothing was written", file=sys.stderr)
        return EXIT_CODES.get(signame, 130)


# ---------------------------------------------------------------------------- one job

@contextlib.contextmanager
def stop_signals_raise():
    """SIGINT and SIGTERM stop the job at once with `Interrupted` (training replaces this by
    its own handler, which first finishes the step and saves a checkpoint)."""
    def handler(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    with stop_signals_handled(handler):
        yield


def _ignore_stop_signals() -> None:
    """The run has stopped and says so: a further Ctrl-C while the interpreter shuts down would
    only add a traceback after the one line."""
    for s in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(s, signal.SIG_IGN)


def _resume_command(hydra_config, path: str) -> str:
    same = [o for o in hydra_config.overrides.task if not o.startswith("resume=")]
    return " ".join(["python run.py", *map(shlex.quote, same), shlex.quote(f"resume={path}")])


def launcher_threads(hydra_config) -> int | None:
    """Threads per job when the launcher runs several jobs at once on this machine
    (`hydra/launcher=joblib`: the cores divided among its n_jobs, at least one each); None
    otherwise (one job at a time: torch's default, every core)."""
    launcher = hydra_config.get("launcher") or {}
    if not str(launcher.get("_target_", "")).endswith("JoblibLauncher"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = launcher.get("n_jobs")
    jobs = cores if n is None else n if n > 0 else max(1, cores + 1 + n)  # joblib: -1 = every core
    return max(1, cores // jobs)


def run_job(cfg, hydra_config) -> float:
    """One Hydra job: run the experiment, exit with one line on a user error or a stop signal."""
    from hydra.types import RunMode

    from gated_pruning import checkpoint, experiment
    from gated_pruning.train import Preempted

    run_dir = hydra_config.runtime.output_dir
    overrides = [o for o in hydra_config.overrides.task if not o.startswith(("resume=", "logger"))]
    name = ",".join(overrides) or "default"
    group = None
    sweep = hydra_config.mode == RunMode.MULTIRUN
    if sweep:
        group = os.path.basename(os.path.normpath(hydra_config.sweep.dir))
    later = " (the sweep stops here: later jobs did not run)" if sweep else ""
    if cfg.threads is None and launcher_threads(hydra_config):
        cfg.threads = launcher_threads(hydra_config)  # recorded in results.json as used
    try:
        with stop_signals_raise():
            choices = {k: v for k, v in hydra_config.runtime.choices.items() if not k.startswith("hydra")}
            results = experiment.run(cfg, run_dir, run_name=name, group=group, choices=choices)
    except UserError as e:
        fail(str(e))
    except Preempted as e:
        _ignore_stop_signals()
        fail(f"stopped by {e.signame}; checkpoint saved to {e.path}; continue with: "
             f"{_resume_command(hydra_config, e.path)}{later}", EXIT_CODES.get(e.signame, 130))
    except KeyboardInterrupt as e:
        _ignore_stop_signals()
        signame = getattr(e, "signame", "SIGINT")
        saved = os.path.join(run_dir, checkpoint.FILENAME)
        if not os.path.isfile(saved):
            saved = cfg.get("resume")
        if saved:
            fail(f"stopped by {signame} at once; continue from the last checkpoint with: "
                 f"{_resume_command(hydra_config, saved)}{later}", EXIT_CODES.get(signame, 130))
        fail(f"stopped by {signame} before a checkpoint was written: nothing to resume, run it "
             f"again{later}", EXIT_CODES.get(signame, 130))
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return results["metrics"]["test"]["top1"]
    print(f"results: {os.path.join(run_dir, experiment.RESULTS)}  test top1 "
          f"{results['metrics']['test']['top1']:.4f}", file=sys.stderr)
    return results["metrics"]["test"]["top1"]
