"""What a run is judged by: the numbers of the network it delivers, and the `objective` a job
returns to a sweeper (Optuna through Hydra) and puts in its tracker's summary (W&B sweeps).

The delivered network is the one a run hands over: fine-tuned if it was, else as pruned, else as
trained (a gated run that is not pruned). Its numbers are `final` in results.json:
`val_top1` (the held-out split of `dataset.val_size`; None without one), `test_top1`,
`flops_kept` and `params_kept` (against the dense reference). A search selects on `val_top1`
by default: a setting chosen by its test accuracy makes that test number optimistic, and a
setting chosen on the network before a cut says nothing about the network after it. Torch-free.
"""
from __future__ import annotations

METRICS = ("val_top1", "test_top1", "flops_kept", "params_kept")
# the direction an Optuna study takes for each (conf/hydra/sweeper/ presets set them)
DIRECTIONS = {"val_top1": "maximize", "test_top1": "maximize", "flops_kept": "minimize",
              "params_kept": "minimize"}


def names(objective) -> list[str]:
    """The objective's metric names, one or several (a multi-objective search)."""
    return [objective] if isinstance(objective, str) else list(objective)


def delivered(results: dict) -> dict:
    """{metric: value} of the network a run delivers (see the module docstring)."""
    metrics = results.get("metrics") or {}
    val, test = (metrics.get("val") or {}).get("top1"), (metrics.get("test") or {}).get("top1")
    pruned = results.get("prune")
    if pruned:
        tuned = pruned.get("finetune")
        if tuned:
            val, test = (tuned.get("val") or {}).get("top1"), tuned["test"]["top1"]
        else:
            val, test = ((pruned.get("val") or {}).get("compact") or {}).get("top1"), pruned["test"]["compact"]["top1"]
    cost = results.get("cost") or {}
    return {"val_top1": val, "test_top1": test, "flops_kept": cost.get("flops_kept"),
            "params_kept": cost.get("params_kept")}


def value(final: dict, objective):
    """What a job returns to a sweeper: the objective's value (a list for several)."""
    out = [final[n] for n in names(objective)]
    return out[0] if isinstance(objective, str) else out


def problem(objective, val_size: int, directions: list[str] | None) -> str | None:
    """What is wrong with `objective` for a search with these Optuna `directions` (None: no
    optimizing sweeper) on a run with `val_size` held-out images; None when it is sound."""
    wanted = names(objective)
    if directions is None:
        return None
    if "val_top1" in wanted and not val_size:
        return ("objective=val_top1: the sweeper selects on validation top-1, but dataset.val_size=0 holds "
                "out no validation split: set dataset.val_size=N (or objective=test_top1, which selects "
                "on the test set)")
    if len(directions) != len(wanted):
        return (f"the sweeper optimizes {len(directions)} objective(s) (hydra.sweeper.direction="
                f"{directions}) but objective={wanted} gives {len(wanted)}: give one direction per objective "
                "(hydra/sweeper=pareto takes objective=[val_top1,flops_kept])")
    wrong = [f"{n} ({d}, not {DIRECTIONS[n]})" for n, d in zip(wanted, directions) if d != DIRECTIONS[n]]
    if wrong:
        return (f"hydra.sweeper.direction={directions} optimizes {', '.join(wrong)}: a sweeper preset "
                "(hydra/sweeper=tpe or pareto) sets the directions")
    return None


def on_test(objective) -> str | None:
    """A warning for a search that selects on the test set."""
    if "test_top1" in names(objective):
        return ("objective=test_top1: the search selects settings by their test accuracy, so the chosen "
                "setting's test top-1 is optimistic; hold out a validation split (dataset.val_size) and "
                "use objective=val_top1")
    return None
