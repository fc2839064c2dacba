"""What `run.py` does around Hydra: reject unknown group options early, turn user errors into
one line and a non-zero exit, and name each job of a sweep."""
from __future__ import annotations

import os
import sys

from gated_pruning.errors import UserError

CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


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
    except Exception:  # noqa: BLE001 - leave malformed overrides to Hydra's own message
        return
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


def check_output_dir(args: list[str]) -> None:
    """Exit with one line if the run (or sweep) directory cannot be created and written."""
    import tempfile

    multirun = "-m" in args or "--multirun" in args
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    path = "multirun" if multirun else "outputs"
    for a in args:
        if a.startswith(key + "="):
            path = a.split("=", 1)[1]
    base = os.path.abspath(path.split("${")[0] or ".")
    while not os.path.exists(base):
        base = os.path.dirname(base)
    try:
        if not os.path.isdir(base):
            raise NotADirectoryError(f"{base} is not a directory")
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=base))
    except OSError as e:
        fail(f"{key}={path}: cannot create the output directory there ({e})")


def run_job(cfg, hydra_config) -> float:
    """One Hydra job: run the experiment, exit with one line on a user error."""
    from hydra.types import RunMode

    from gated_pruning import experiment
    from gated_pruning.train import Preempted

    run_dir = hydra_config.runtime.output_dir
    overrides = [o for o in hydra_config.overrides.task if not o.startswith(("resume=", "logger"))]
    name = ",".join(overrides) or "default"
    group = None
    if hydra_config.mode == RunMode.MULTIRUN:
        group = os.path.basename(os.path.normpath(hydra_config.sweep.dir))
    try:
        choices = {k: v for k, v in hydra_config.runtime.choices.items() if not k.startswith("hydra")}
        results = experiment.run(cfg, run_dir, run_name=name, group=group, choices=choices)
    except UserError as e:
        fail(str(e))
    except Preempted as e:
        same = [o for o in hydra_config.overrides.task if not o.startswith("resume=")]
        print(f"stopped by SIGTERM; checkpoint saved to {e}; continue with: "
              f"python run.py {' '.join(same)} resume={e}", file=sys.stderr)
        sys.exit(143)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return results["metrics"]["test"]["top1"]
    print(f"results: {os.path.join(run_dir, experiment.RESULTS)}  test top1 "
          f"{results['metrics']['test']['top1']:.4f}", file=sys.stderr)
    return results["metrics"]["test"]["top1"]
