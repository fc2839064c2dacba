"""Every job of a `run.py` command checked before anything is written.

`check(argv)` composes the config of every job (every point of a `-m` sweep) exactly as Hydra
will, and checks, in this order: the command-line keys (a misspelled key gets the closest valid
one), every value and the cross-key checks (`config.RULES`, `checks.CROSS_CHECKS`), the values of
Hydra's launcher, and then what lies outside the config: the device, the checkpoint to resume,
the data files (their arrays' headers and labels), and the network's own constructors, run on
the meta device. The first problem is one `error:` line and exit 2; the settings a job will not
read are `warning:` lines. torch is imported only for the last group, once every config passed,
so that a typo is refused without torch's two-second import.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import re
from dataclasses import dataclass

from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

from gated_pruning.config.checks import subsets_problem
from gated_pruning.config.keys import ARGUMENTS, RULES, flatten, launcher_problem, problems, resolved
from gated_pruning.errors import UserError
from gated_pruning import objective
from gated_pruning.config.unread import ignored
from gated_pruning.toolkit import CONF_DIR, fail, one_line, warn

# the launchers that run jobs on this machine, where the device named must exist
LOCAL_LAUNCHERS = ("BasicLauncher", "LocalLauncher", "JoblibLauncher")


@dataclass
class Plan:
    """What a checked command will do: the main config, every job's (prefix, config), whether
    it is a sweep."""
    master: object
    jobs: list
    multirun: bool


def group_options(conf_dir: str = CONF_DIR, extra: tuple = ()) -> dict:
    """{group: [options]} for every config group directory under conf/ and under the `extra`
    config directories (a user's `--config-dir`, which Hydra searches after conf/)."""
    out = {}
    for root in (conf_dir, *extra):
        for group in sorted(os.listdir(root)):
            path = os.path.join(root, group)
            if os.path.isdir(path):
                found = {f[:-5] for f in os.listdir(path) if f.endswith(".yaml")}
                out[group] = sorted(set(out.get(group, ())) | found)
    return out


def check_overrides(args: list[str], conf_dir: str = CONF_DIR, extra: tuple = ()) -> None:
    """Exit with one line if a command-line override picks a config group option that does not
    exist, in conf/ or in the `extra` config directories (Hydra's own message for this spans a
    dozen lines)."""
    candidates = [a for a in args if not a.startswith("-") and "=" in a]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except Exception as e:  # noqa: BLE001 - the grammar's own message, on one line
        fail(f"cannot parse the overrides: {one_line(e)}")
    groups = group_options(conf_dir, extra)
    for ov in overrides:
        key = ov.key_or_group
        if key not in groups or ov.is_delete():
            continue
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.get_value_element_as_str()]
        for value in values:
            if value not in groups[key] and value != "null":
                fail(f"{key}={value} is not an option of config group '{key}' "
                     f"(allowed: {', '.join(groups[key])})")


def hydra_args(argv: list[str]):
    """Hydra's own reading of the command line, with its errors on one line."""
    parser = get_args_parser()

    def error(message):
        if "unrecognized arguments" in message and "=" in message:
            message += (" (flags such as -m go before the key=value overrides, and overrides take "
                        "no leading dashes; see python run.py --help)")
        fail(message)

    parser.error = error
    return parser.parse_args(argv)


def quote(value: str) -> str:
    """A Hydra override value that stays a literal string (commas, spaces, quotes, ${): in
    Hydra's quoted strings only backslashes before a quote or at the end are escapes."""
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


def job_part(cfg):
    """The job's config without the `hydra` node (what the task function receives)."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])


def _leaves(cfg) -> set:
    return set(flatten(OmegaConf.to_container(job_part(cfg), resolve=False)))


def _check_keys(overrides: list[str], compose, prefix: str = "") -> tuple[object, list[str]]:
    """Every key the overrides set exists for the options they pick: a misspelled key is
    named with the closest valid one; `+key=` (add a key) and `~key` (delete one) are refused
    for config values, since the code reads exactly the keys conf/ defines. Returns the config
    of the group choices alone, whose keys a job must still hold after its overrides, and the
    keys the overrides set. A sweep over a group's options is left out, as Hydra leaves it out
    of a sweep's main config (each job is checked with its own option)."""
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
        if key.startswith(ARGUMENTS) and not ov.is_delete():
            continue  # the arguments of a user's own class (model.net): its constructor checks them
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
    return base, [ov.key_or_group for ov in values]


def _job_problems(cfg, base_leaves: set) -> list[str]:
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} in values
    gone = sorted(base_leaves - _leaves(cfg))
    if gone:
        return [f"{gone[0]} is missing: an override replaced the section that holds it"]
    try:
        return problems(resolved(job_part(cfg)))
    except UserError as e:  # an interpolation that does not resolve: ${oc.env:UNSET}, ${no.such.key}
        return [str(e)]


def _environment_problem(c: dict, local: bool, cache: dict) -> str | None:
    """What lies outside the config: the device, the checkpoint to resume, the data files, and
    the network's constructors (every check a run would make before its first step)."""
    # torch comes in here, once every job's config has passed: `python run.py gama=1` answers in
    # about 1 s, where importing torch alone takes 2.3 s on this project's CPU machine
    from gated_pruning import checkpoint, experiment, imagefolder
    from gated_pruning.data import check_npz, folder_samples, locate_cifar
    from gated_pruning.datasets import DECLARED, describe
    from gated_pruning.runtime import check_device

    try:
        check_device(c["device"], need_available=local)
        if c.get("resume"):
            path = checkpoint.resolve(c["resume"])
            if path not in cache:
                cache[path] = checkpoint.load(path)
            checkpoint.check_compatible(cache[path].get("fingerprint", {}), checkpoint.fingerprint(c), path)
        d = c["dataset"]
        kind, classes = DECLARED[d["name"]].kind, None
        if kind == "memory":
            npz = locate_cifar(d["name"], d["root"], d["download"])
            if npz is not None:
                if npz not in cache:
                    cache[npz] = check_npz(npz, d["name"])
                found = subsets_problem(d, cache[npz], where=f" of {npz}")
                if found:
                    return found
        elif kind == "folder":  # its layout, the splits a run draws, and its images' headers
            key = ("folder", d["root"], d.get("val_size"), d.get("train_size"), d.get("test_size"), c["seed"])
            if key not in cache:
                train, val, test, classes = folder_samples(OmegaConf.create(d), c["seed"])
                if len(train) < d["batch_size"]:
                    raise UserError(f"dataset.batch_size={d['batch_size']} is larger than the training set "
                                    f"({len(train)} images of {d['root']}): no full batch, no training step")
                imagefolder.verify(train + val + test)
                cache[key] = classes
            classes = cache[key]
        if importlib.util.find_spec("torch_pruning") is None:  # the pruning step needs it, after all the training
            raise UserError("torch-pruning is not installed: the networks are compacted through its dependency "
                            "graph (pip install -e ., or pip install 'torch-pruning>=1.6,<1.7')")
        experiment.check_buildable(OmegaConf.create(c), describe(d, classes).model_args)
    except UserError as e:
        return str(e)
    return None


def _sweep_jobs(master) -> list[list[str]]:
    """The overrides of every job of a sweep, as Hydra's basic sweeper splits them; for another
    sweeper (which picks its points as it goes), the overrides that all its jobs share."""
    task = OmegaConf.to_container(master.hydra.overrides.task, resolve=False)  # as written: a
    # ${now:...} in an override would resolve if the ListConfig were iterated
    if str(master.hydra.sweeper.get("_target_")).endswith("BasicSweeper"):  # Hydra's own split
        params = [f"{k}={v}" for k, v in (master.hydra.sweeper.get("params") or {}).items()]
        try:
            return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params + task), None)[0]
        except Exception as e:  # noqa: BLE001
            fail(one_line(e))
    return [[o.input_line for o in OverridesParser.create().parse_overrides(task) if not o.is_sweep_override()]]


def _launcher(master) -> dict:
    try:
        return OmegaConf.to_container(master.hydra.launcher, resolve=True)
    except Exception:  # noqa: BLE001 - a value that needs a job's context: checked as written
        return OmegaConf.to_container(master.hydra.launcher, resolve=False)


def _search_directions(master, multirun: bool) -> list[str] | None:
    """The directions of the search that will read the jobs' objective: an Optuna sweeper's, or,
    under a W&B sweep agent (WANDB_SWEEP_ID), the objective's own; None when nothing searches."""
    if os.environ.get("WANDB_SWEEP_ID"):
        return [objective.DIRECTIONS[n] for n in objective.names(master.objective)]
    sweeper = master.hydra.get("sweeper") or {}
    if not multirun or not str(sweeper.get("_target_", "")).endswith("OptunaSweeper"):
        return None
    d = sweeper.get("direction")
    return [str(getattr(x, "name", x)) for x in (d if OmegaConf.is_list(d) or isinstance(d, list) else [d])]


def check_jobs(compose, overrides: list[str], multirun: bool) -> Plan:
    """Every job checked: first keys and values (fast, no torch), then what lies outside the
    config (device, checkpoint, data, constructors); warnings printed once all passed."""
    base, given = _check_keys(overrides, compose)  # typos first, in the words of this project
    multirun = multirun or any(o.replace(" ", "") == "hydra.mode=MULTIRUN" for o in overrides)
    if not multirun:  # one job: its config is the main config (a sweep a,b is refused, in Hydra's words)
        master = compose(overrides)
        found = _job_problems(master, _leaves(base))
        if found:
            fail(found[0])
        jobs = [("", master, given)]
    else:
        master = compose(overrides, multirun=True, validate=False)
        found = launcher_problem(_launcher(master))
        if found:
            fail(found)
        hydra_overrides = OmegaConf.to_container(master.hydra.overrides.hydra, resolve=False)
        points = _sweep_jobs(master)
        jobs = []
        for i, job in enumerate(points):
            prefix = f"job {i} of {len(points)} ({' '.join(job)}): " if len(points) > 1 else ""
            compose.prefix = prefix
            base, given = _check_keys(hydra_overrides + list(job), compose, prefix)
            cfg = compose(hydra_overrides + list(job))
            found = _job_problems(cfg, _leaves(base))
            if found:
                fail(prefix + found[0])
            jobs.append((prefix, cfg, given))
    directions = _search_directions(master, multirun)
    for prefix, cfg, _ in jobs:
        found = objective.problem(cfg.objective, cfg.dataset.get("val_size") or 0, directions)
        if found:
            fail(prefix + found)
    launcher = str(master.hydra.launcher.get("_target_", ""))
    local = not multirun or launcher.endswith(LOCAL_LAUNCHERS)  # a GPU here counts
    cache = {}
    for prefix, cfg, _ in jobs:
        found = _environment_problem(resolved(job_part(cfg)), local, cache)
        if found:
            fail(prefix + found)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks
        if directions is not None and objective.on_test(jobs[0][1].objective):
            warn(objective.on_test(jobs[0][1].objective))
        for prefix, cfg, given in jobs:
            for line in ignored(resolved(job_part(cfg)), given):
                warn(prefix + line)
    return Plan(master, [(prefix, cfg) for prefix, cfg, _ in jobs], multirun)


def check(argv: list[str], conf_dir: str = CONF_DIR) -> Plan | None:
    """Check every job of `python run.py argv` before any work: a Plan, or None when Hydra only
    prints something (--help, --cfg, ...) or reruns a pickled config (its own experiment)."""
    args = hydra_args(argv)
    commands = args.run + args.multirun + (args.cfg is not None) + args.shell_completion + (args.info is not None)
    if commands > 1:  # Hydra's own checks, which it reports with a traceback
        fail("only one of --run, --multirun, --cfg, --info and --shell-completion can be given")
    if args.resolve and not (args.cfg or args.help):
        fail("--resolve only goes with --cfg or --help")
    if args.experimental_rerun is not None and not os.path.isfile(args.experimental_rerun):
        fail(f"--experimental-rerun {args.experimental_rerun}: no such file (give a run's .hydra/config.pickle)")
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion \
            or args.experimental_rerun:
        return None
    if args.config_dir is not None and not os.path.isdir(args.config_dir):
        fail(f"--config-dir={args.config_dir}: no such directory")
    check_overrides(args.overrides, conf_dir, (args.config_dir,) if args.config_dir else ())
    if args.config_path is not None:
        conf_dir = os.path.join(os.path.dirname(conf_dir), args.config_path)
    overrides = list(args.overrides)
    if args.config_dir is not None:
        overrides.append(f"hydra.searchpath=[{quote('file://' + os.path.abspath(args.config_dir))}]")
    if not os.path.isdir(conf_dir):
        fail(f"--config-path={args.config_path}: no such directory ({conf_dir})")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=os.path.abspath(conf_dir), job_name="run", version_base="1.3"):
            compose = _Composer(GlobalHydra.instance().hydra, args.config_name or "config",
                                conf_dir=os.path.abspath(conf_dir))
            return check_jobs(compose, overrides, args.multirun)
    finally:
        HydraConfig.instance().cfg = None
