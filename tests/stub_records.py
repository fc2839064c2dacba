"""Stub run records (results.json) shaped like real ones, for the report tests and the scale
benchmark (benchmarks/report_scale.py): no training, numbers chosen by the caller or by a fixed
pattern, every field a real record of this version carries (env, time, val split, history)."""
import json
import os

DENSE = [16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128]  # VGG-16 x0.25
LAYERS = [f"conv{i}" for i in range(len(DENSE))]
GATE_OPTIMIZERS = {"apg": "APG", "sgd": "GateSGD"}
BINARIZERS = {"float": "NoBinarizer", "threshold": "ThresholdBinarizer", "stochastic": "StochasticBinarizer"}


def record(method="sss", seed=0, test=0.30, val=None, flops=0.5, target=0.5, kind="budget", epochs=4,
           gamma=1e-3, opt="apg", binarizer="float", threads=1, commit="0123456789abcdef", dirty=False,
           history_steps=35, gamma_final=0.0, frozen=True, env=True):
    """One training run's results.json as a dict: a gated run unless method is dense/uniform."""
    gated = method not in ("dense", "uniform", "scratch_e", "scratch_b", "l1norm")
    kept = [max(1, round(d * flops ** 0.5)) for d in DENSE]
    steps = [50 * (i + 1) for i in range(history_steps)]
    history = [{"step": s, "epoch": s / 390,
                "zeros": [round((d - k) * i / max(len(steps) - 1, 1)) for d, k in zip(DENSE, kept)],
                "ones": [0] * len(DENSE), "small": [0] * len(DENSE),
                "quantiles": [[q * (1 - 0.5 * i / len(steps)) for q in (0.1, 0.3, 0.5, 0.7, 0.9)]
                              for _ in DENSE],
                "nonzero_mean": [0.5] * len(DENSE), "gamma": gamma, "frozen": frozen and i > len(steps) * 0.6}
               for i, s in enumerate(steps)]
    res = {
        "config": {"seed": seed, "gamma": gamma, "target_flops": target if kind in ("budget", "uniform") else None,
                   "model": {"gated": gated},
                   "optimizer": {"gates": {"_target_": f"gated_pruning.optim.{GATE_OPTIMIZERS[opt]}"}},
                   "binarizer": {"_target_": f"gated_pruning.gates.{BINARIZERS[binarizer]}"},
                   "trainer": {"epochs": epochs},
                   "budget": {"enabled": kind == "budget"},
                   "arch": {"source": {"uniform": "uniform", "arch_run": "run"}.get(kind, "config")},
                   "prune": {"target_flops": target if kind == "cut" else None},
                   "dataset": {"val_size": 5000 if val is not None else 0}},
        "target_flops": target,
        "target": {"kind": kind, "flops": target},
        "choices": {"method": method},
        "metrics": {"epoch": epochs, "step": steps[-1], "test": {"loss": 2.0, "top1": test, "top5": 0.6}},
        "gates": {"layers": list(LAYERS) if gated else [], "channels": list(DENSE) if gated else [],
                  "final": ({"step": steps[-1], "zeros": [d - k for d, k in zip(DENSE, kept)],
                             "ones": list(kept), "small": [0] * len(DENSE), "nonzero_mean": [0.5] * len(DENSE)}
                            if gated else None),
                  "history": history if gated else [], "dead_layers": [],
                  "gamma_final": gamma_final if gated else None},
        "prune": {"threshold": 0.0, "target_flops": target if kind == "cut" else None,
                  "dense": {"params": 1000, "flops": 2000, "latency_ms": 2.0, "widths": list(DENSE)},
                  "compact": {"params": 500, "flops": 1000, "latency_ms": 1.0, "widths": kept},
                  "kept": {"params": flops, "flops": flops}, "speedup": 1.5, "dead_layers": [],
                  "test": {"dense": {"top1": test}, "compact": {"top1": test}}, "finetune": None},
        "cost": {"flops_kept": flops, "params_kept": flops, "reference": {"widths": list(DENSE)}},
    }
    if env:
        res["env"] = {"commit": commit, "dirty": dirty, "torch": "2.9.0", "python": "3.12.0", "device": "cpu",
                      "device_name": "stub", "threads": threads, "pid": 1}
        res["time"] = {"start": "2026-12-01T00:00:00.000+00:00", "end": "2026-12-01T00:10:00.000+00:00"}
    if val is not None:
        res["metrics"]["val"] = {"loss": 2.0, "top1": val, "top5": 0.6}
        res["prune"]["val"] = {"dense": {"top1": val}, "compact": {"top1": val}}
    if not gated and kind != "cut":
        del res["prune"]  # a plain network that was not cut: no prune section, like dense runs
        res["cost"] = {"flops_kept": flops, "params_kept": flops, "reference": {"widths": list(DENSE)}}
    return res


def write(root, name, res) -> str:
    """Write `res` as ROOT/NAME/results.json; returns the folder."""
    d = os.path.join(str(root), name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump(res, f)
    return d


def sweep(root, n=200) -> None:
    """`n` runs of a gamma sweep: gate optimizer x binarizer x 10 gammas x seeds (4 x 10 x n/40)."""
    i = 0
    while i < n:
        for opt in ("apg", "sgd"):
            for b in ("float", "threshold"):
                for g in range(10):
                    if i >= n:
                        return
                    gamma = 1e-4 * 2 ** g
                    flops = max(0.05, 1 - g / 10)
                    write(root, f"{i}_optimizer={opt},binarizer={b},gamma={gamma:g}",
                          record(seed=i // 40, test=0.2 + 0.1 * flops + 0.001 * (i % 7), flops=flops,
                                 target=None, kind=None, gamma=gamma, opt=opt, binarizer=b, gamma_final=gamma,
                                 frozen=False))
                    i += 1
