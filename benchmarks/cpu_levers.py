"""What each CPU speed lever gives on the CPU preset's network, measured side by side in one run.

    python benchmarks/cpu_levers.py [--data-root DIR] [--reps 15] [--method sss] [--no-compile]

The network and training step are those of `python run.py experiment=cpu_cifar100 method=sss
target_flops=0.5` (VGG-16 x0.25, batch 128, gated, APG, the FLOPs budget), built by the same code
(`experiment.build_trainer`), fed real CIFAR-100 batches when `--data-root` holds cifar100.npz
(random images otherwise). Printed, each as a ratio against the baseline measured in the same run:

1. the training step (one process, every core): channels_last, bf16 autocast (`trainer.amp`),
   torch.compile, and their combinations, against float32 NCHW eager. Interleaved rounds
   (A B C ... A B C ...), medians, so a machine that slows down slows every variant alike.
2. evaluation (a batch of 500, float32, eval mode): channels_last against NCHW, and bf16 for
   reference (evaluation stays float32 in this project).
3. packing: training steps per second of two processes with one thread each, running at once,
   against one process with every thread (what `hydra/launcher=joblib` does on a 2-core machine),
   both with the levers of `--levers`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LEVERS = ("channels_last", "amp", "compile")


def interleaved(fns: dict, reps: int, warmup: int) -> dict:
    """Median seconds of each callable, in interleaved rounds (speed.py's, on the CPU)."""
    from speed import interleaved as timed_rounds  # benchmarks/ is this script's folder

    return timed_rounds(fns, reps, warmup, sync=lambda: None)


def make_trainer(levers: set, data_root: str | None, method: str):
    """(trainer, batches) for the CPU preset with the given trainer levers on."""
    import torch
    from hydra import compose, initialize_config_dir

    from gated_pruning.data import build_data
    from gated_pruning.experiment import build_trainer

    overrides = ["experiment=cpu_cifar100", f"method={method}", "logger=none", "trainer.progress=false",
                 "device=cpu", *(f"trainer.{k}={str(k in levers).lower()}" for k in LEVERS)]
    if method not in ("dense",):
        overrides.append("target_flops=0.5")
    if data_root and os.path.isfile(os.path.join(data_root, "cifar100.npz")):
        overrides += [f"dataset.root={data_root}", "dataset.download=false"]
        real = True
    else:  # random images of the same shape: the same work per step
        overrides += ["dataset=synthetic", "dataset.num_classes=100", "dataset.train_size=1024",
                      "dataset.test_size=500", "dataset.batch_size=128", "dataset.eval_batch_size=500"]
        real = False
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    data = build_data(cfg.dataset, torch.device("cpu"), cfg.seed)
    trainer, _ = build_trainer(cfg, data, torch.device("cpu"))
    it = data.train.epoch(0)
    batches = [next(it) for _ in range(4)]
    eval_batch = next(data.test.epoch())
    return trainer, batches, eval_batch, real


def name(levers) -> str:
    return " + ".join(l for l in LEVERS if l in levers) or "float32 NCHW eager (baseline)"


def bench_steps(args) -> None:
    import torch

    combos = [set(), {"channels_last"}, {"amp"}, {"channels_last", "amp"}]
    if not args.no_compile:
        combos += [{"compile"}, {"channels_last", "amp", "compile"}]
    steppers, real = {}, False
    for levers in combos:
        t = time.perf_counter()
        trainer, batches, _, real = make_trainer(levers, args.data_root, args.method)
        i = [0]

        def step(trainer=trainer, batches=batches, i=i):
            x, y = batches[i[0] % len(batches)]
            i[0] += 1
            trainer._train_step(x, y)
            trainer.step += 1
        if "compile" in levers:
            step()  # the compile itself
            print(f"  (compile warm-up of {name(levers)}: {time.perf_counter() - t:.0f} s)", flush=True)
        steppers[name(levers)] = step
    print(f"1. training step, {torch.get_num_threads()} threads, {'real' if real else 'random'} images, "
          f"method={args.method}, median of {args.reps} interleaved rounds")
    med = interleaved(steppers, args.reps, warmup=3)
    base = med[name(set())]
    for k, v in med.items():
        print(f"   {k:42s} {1000 * v:7.1f} ms   x{base / v:.2f}")


def bench_eval(args) -> None:
    import torch

    from gated_pruning.train import evaluate  # noqa: F401 - the same float32 eval as the project

    trainer, _, (x, _), _ = make_trainer(set(), args.data_root, args.method)
    model = trainer.model.eval()
    cl = __import__("copy").deepcopy(model).to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)

    def run(m, inp, bf16=False):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            m(inp)
    fns = {"float32 NCHW (baseline)": lambda: run(model, x), "float32 channels_last": lambda: run(cl, xcl),
           "bf16 channels_last (not used)": lambda: run(cl, xcl, True)}
    med = interleaved(fns, args.reps, warmup=2)
    base = med["float32 NCHW (baseline)"]
    print(f"2. evaluation, a batch of {len(x)} images, eval mode")
    for k, v in med.items():
        print(f"   {k:42s} {1000 * v:7.1f} ms   x{base / v:.2f}")


def worker(args) -> None:
    """One packing worker: build, warm up, say ready, wait for 'go', time --steps steps."""
    import torch

    torch.set_num_threads(args.threads)
    trainer, batches, _, _ = make_trainer(set(args.levers.split(",")) - {""}, args.data_root, args.method)
    for i in range(3):
        trainer._train_step(*batches[i % len(batches)])
    print("ready", flush=True)
    sys.stdin.readline()
    t = time.perf_counter()
    for i in range(args.steps):
        trainer._train_step(*batches[i % len(batches)])
    print(f"{time.perf_counter() - t:.6f}", flush=True)


def packed(args, processes: int, threads: int) -> float:
    """Steps per second of `processes` workers with `threads` threads each, started together."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(threads), "--levers", args.levers,
           "--steps", str(args.steps), "--method", args.method] + (["--data-root", args.data_root] if args.data_root else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                              stderr=subprocess.DEVNULL) for _ in range(processes)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    seconds = [float(p.stdout.readline()) for p in procs]
    for p in procs:
        p.wait()
    return processes * args.steps / max(seconds)


def bench_packing(args) -> None:
    cores = len(os.sched_getaffinity(0))
    rounds = {"1 process x {} threads".format(cores): [], f"{cores} processes x 1 thread": []}
    for _ in range(2):  # alternate, twice
        rounds[f"1 process x {cores} threads"].append(packed(args, 1, cores))
        rounds[f"{cores} processes x 1 thread"].append(packed(args, cores, 1))
    print(f"3. packing, levers {args.levers or 'none'}, {args.steps} steps per process, best of 2 alternating rounds")
    base = max(rounds[f"1 process x {cores} threads"])
    for k, v in rounds.items():
        print(f"   {k:42s} {max(v):7.2f} steps/s   x{max(v) / base:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default=os.environ.get("GATED_PRUNING_DATA"))
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--steps", type=int, default=60, help="steps per process in the packing test")
    p.add_argument("--method", default="sss")
    p.add_argument("--levers", default="channels_last,amp", help="levers of the packing test")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--only", choices=("steps", "eval", "packing"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    import torch

    print(f"torch {torch.__version__}, {len(os.sched_getaffinity(0))} cores")
    for part, fn in (("steps", bench_steps), ("eval", bench_eval), ("packing", bench_packing)):
        if args.only in (None, part):
            fn(args)


if __name__ == "__main__":
    main()
