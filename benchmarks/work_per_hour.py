"""Training runs of the CPU preset finished per hour: the levers and packing of today against
the old way, measured side by side in one run.

    python benchmarks/work_per_hour.py DATA_DIR [--runs 2] [--preset cpu_cifar100] [--epochs N] [--keep DIR]

Old: `python run.py experiment=PRESET trainer.amp=false trainer.channels_last=false`, one run
after another with every core (float32, NCHW: what the code did on a CPU before the levers).
New: `python run.py -m experiment=PRESET hydra/launcher=joblib seed=...`, the preset's own
settings, the runs packed as the launcher packs them (on 2 cores: two jobs of one thread).
Both train the same `--runs` seeds; the ratio of wall-clock times is the ratio of runs per hour.
`--epochs N` shortens both (the preset's cost per epoch, its fixed costs spread over fewer epochs:
a conservative ratio for the full-length runs).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t


def top1s(folder: str) -> list[float]:
    out = []
    for dirpath, _, files in sorted(os.walk(folder)):
        if "results.json" in files:
            with open(os.path.join(dirpath, "results.json")) as f:
                out.append(json.load(f)["metrics"]["test"]["top1"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data_dir")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--preset", default="cpu_cifar100")
    p.add_argument("--epochs", type=int, help="train this many epochs instead of the preset's")
    p.add_argument("--keep", help="keep the runs in this folder (default: a temporary one)")
    a = p.parse_args()
    out = a.keep or tempfile.mkdtemp(prefix="work_per_hour-")
    env = dict(os.environ, WANDB_MODE="disabled")
    common = [f"experiment={a.preset}", f"dataset.root={a.data_dir}", "logger=none", "trainer.progress=false"]
    if a.epochs:
        common.append(f"trainer.epochs={a.epochs}")
    seeds = list(range(a.runs))
    old = sum(timed([sys.executable, "run.py", *common, "trainer.amp=false", "trainer.channels_last=false",
                     f"seed={s}", f"hydra.run.dir={out}/old/{s}"], env) for s in seeds)
    new = timed([sys.executable, "run.py", "-m", *common, "hydra/launcher=joblib",
                 f"seed={','.join(map(str, seeds))}", f"hydra.sweep.dir={out}/new"], env)
    print(f"{a.runs} runs of experiment={a.preset}{f' ({a.epochs} epochs)' if a.epochs else ''}: old (float32 NCHW, one at a time) {old:.0f} s, "
          f"new (preset levers, hydra/launcher=joblib) {new:.0f} s")
    print(f"runs per hour: old {3600 * a.runs / old:.2f}, new {3600 * a.runs / new:.2f}, ratio x{old / new:.2f}")
    print(f"test top-1 old {[round(100 * t, 2) for t in top1s(out + '/old')]}, "
          f"new {[round(100 * t, 2) for t in top1s(out + '/new')]} (seeds {seeds}; same seeds, different "
          "arithmetic: the two columns differ by float rounding and bf16, not by the recipe)")


if __name__ == "__main__":
    main()
