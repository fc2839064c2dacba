"""Summarize finished runs: a markdown table and PNG plots from every results.json below a folder.

    python -m gated_pruning.report multirun/2025-01-01/12-00-00 [--out OUTDIR]

Writes OUTDIR/report.md (default OUTDIR: DIR/report) with one row per run, and
`accuracy_vs_flops.png`, `zero_gate_heatmap.png`, `kept_widths.png`; the table also goes to
stdout. Runs written before pruning existed (no "prune" section) get "-" in the pruning columns
and are left out of the two pruning plots; their per-layer sparsity comes from the final gate
counts instead.
"""
from __future__ import annotations

import json
import math
import os
import sys

from gated_pruning.errors import UserError

RESULTS = "results.json"
PLOTS = ("accuracy_vs_flops.png", "zero_gate_heatmap.png", "kept_widths.png", "gate_trajectories.png")
COLUMNS = ("run", "variant", "gamma", "top-1 %", "pruned top-1 %", "FLOPs kept %", "params kept %",
           "speedup", "sparsity per layer")

GATE_OPTIMIZERS = {"APG": "apg", "GateSGD": "sgd"}
BINARIZERS = {"NoBinarizer": "float", "ThresholdBinarizer": "threshold",
              "StochasticBinarizer": "stochastic"}


class ReportError(UserError):
    """A problem with the input folder: reported as one `error:` line."""


def _get(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _number(x) -> float | None:
    """x as a finite float, or None for anything else (a results.json edited by hand, a bool)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _short(target: str | None, table: dict) -> str:
    name = (target or "?").rsplit(".", 1)[-1]
    return table.get(name, name.lower())


def variant_of(config: dict) -> str:
    """`apg-float`, `sgd-threshold`, ...: gate optimizer and binarizer; `plain` without gates."""
    if _get(config, "model", "gated") is False:
        return "plain"
    opt = _short(_get(config, "optimizer", "gates", "_target_"), GATE_OPTIMIZERS)
    binarizer = _short(_get(config, "binarizer", "_target_") or "gated_pruning.gates.NoBinarizer", BINARIZERS)
    return f"{opt}-{binarizer}"


def find_results(root: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if RESULTS in filenames:
            found.append(os.path.join(dirpath, RESULTS))
    return found


def load_runs(root: str) -> list[dict]:
    """One record per readable results.json below `root`, sorted by variant, gamma, name."""
    from gated_pruning.cli import readable_dir

    readable_dir(root)
    paths = find_results(root)
    if not paths:
        raise ReportError(f"no {RESULTS} found under {root}")
    runs = []
    for path in paths:
        try:
            with open(path) as f:
                res = json.load(f)
            if not isinstance(res, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            print(f"warning: skipping {path}: {e}", file=sys.stderr)
            continue
        run_dir = os.path.dirname(path)
        name = os.path.relpath(run_dir, root)
        if name == ".":
            name = os.path.basename(os.path.abspath(root))
        try:
            runs.append(make_record(res, name))
        except (AttributeError, KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            print(f"warning: skipping {path}: not the results of a run ({type(e).__name__}: {e})",
                  file=sys.stderr)
    if not runs:
        raise ReportError(f"no readable {RESULTS} under {root}")
    runs.sort(key=lambda r: (r["variant"], math.inf if r["gamma"] is None else r["gamma"], r["name"]))
    return runs


def _numbers(xs) -> list | None:
    """A list of finite numbers, or None when `xs` is anything else."""
    if not isinstance(xs, list) or any(_number(x) is None for x in xs):
        return None
    return xs


def make_record(res: dict, name: str) -> dict:
    config = res.get("config") or {}
    gates = dict(res.get("gates") or {})
    prune = res.get("prune") or None
    if not isinstance(config, dict) or not isinstance(prune, (dict, type(None))):
        raise TypeError("config and prune must be JSON objects")
    gates["channels"] = _numbers(gates.get("channels"))
    gates["history"] = [h for h in gates.get("history") or [] if isinstance(h, dict)
                        and _number(h.get("step")) is not None and _numbers(h.get("zeros")) is not None]
    if not isinstance(gates.get("final"), dict) or _numbers(gates["final"].get("zeros")) is None:
        gates["final"] = None
    if prune is not None and not (_numbers(_get(prune, "dense", "widths")) and _numbers(_get(prune, "compact", "widths"))):
        prune = None  # an incomplete section: treat the run as unpruned
    channels = gates.get("channels") or []
    sparsity = None
    if prune is not None:
        dense, compact = prune["dense"]["widths"], prune["compact"]["widths"]
        sparsity = [1 - k / d if d else 0.0 for k, d in zip(compact, dense)]
    elif _get(gates, "final", "zeros") and channels:
        sparsity = [z / c if c else 0.0 for z, c in zip(gates["final"]["zeros"], channels)]
    if prune is not None:
        dead = prune.get("dead_layers") or []
    else:  # layers whose every gate ended at zero
        zeros = _get(gates, "final", "zeros") or []
        dead = [n for n, z, c in zip(gates.get("layers") or [], zeros, channels) if c and z == c]
    gamma = config.get("gamma")
    if sparsity is not None:
        sparsity = [float(x) for x in sparsity]
    return {
        "name": name,
        "variant": variant_of(config),
        "gamma": _number(gamma),
        "top1": _number(_get(res, "metrics", "test", "top1")),
        "pruned_top1": _number(_get(prune, "test", "compact", "top1")),
        "finetuned_top1": _number(_get(prune, "finetune", "test", "top1")),
        "flops_kept": _number(_get(prune, "kept", "flops")),
        "params_kept": _number(_get(prune, "kept", "params")),
        "speedup": _number(_get(prune, "speedup")),
        "sparsity": sparsity,
        "layers": [str(n) for n in gates.get("layers") or []] or [f"conv{i}" for i in range(len(channels))],
        "channels": channels,
        "history": gates.get("history") or [],
        "dense_widths": _get(prune, "dense", "widths"),
        "kept_widths": _get(prune, "compact", "widths"),
        "dead_layers": dead,
        "pruned": prune is not None,
    }


# ---------------------------------------------------------------- table

def _pct(x):
    return "-" if x is None else f"{100 * x:.2f}"


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def table_rows(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    columns = list(COLUMNS)
    with_ft = any(r["finetuned_top1"] is not None for r in runs)
    if with_ft:
        columns.insert(5, "fine-tuned top-1 %")
    rows = []
    for r in runs:
        row = [r["name"], r["variant"], "-" if r["gamma"] is None else f"{r['gamma']:g}", _pct(r["top1"]),
               _pct(r["pruned_top1"]),
               "-" if r["flops_kept"] is None else f"{100 * r['flops_kept']:.1f}",
               "-" if r["params_kept"] is None else f"{100 * r['params_kept']:.1f}",
               "-" if r["speedup"] is None else f"x{r['speedup']:.2f}",
               "-" if r["sparsity"] is None else " ".join(f"{s:.2f}" for s in r["sparsity"])]
        if with_ft:
            row.insert(5, _pct(r["finetuned_top1"]))
        rows.append(row)
    return columns, rows


def markdown_table(runs: list[dict]) -> str:
    columns, rows = table_rows(runs)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(runs: list[dict], root: str) -> str:
    parts = [f"# Report: {os.path.abspath(root)}", "",
             f"{len(runs)} runs. Top-1 on the test set; pruned top-1 is the compact network after "
             "removing the zero-gate channels (before any fine-tuning). Sparsity per layer: the "
             "fraction of each conv layer's channels removed "
             "(from the final gate counts for runs without a prune section).", "",
             markdown_table(runs), ""]
    notes = [f"- `{r['name']}`: no prune section (pruning columns \"-\", left out of the pruning plots)"
             for r in runs if not r["pruned"]]
    notes += [f"- `{r['name']}`: every gate of {', '.join(r['dead_layers'])} is zero (the network "
              "outputs a constant)" for r in runs if r["dead_layers"]]
    if notes:
        parts += ["Notes:", "", *notes, ""]
    parts += ["## Accuracy vs FLOPs", "", "![accuracy vs FLOPs](accuracy_vs_flops.png)", "",
              "## Zero gates during training", "", "![zero gates](zero_gate_heatmap.png)", "",
              "## Kept widths", "", "![kept widths](kept_widths.png)", "",
              "## Gate trajectories", "",
              "Per layer, the median latent gate over training with its 10-90% band (binary gates: the "
              "float value before binarization). Lines that fall together are the uniform shrink; "
              "bands that split within a layer are channel selection.", "",
              "![gate trajectories](gate_trajectories.png)", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------- plots

MARKERS = "osD^vP*Xh<>"


def _style(runs: list[dict]) -> dict:
    """{variant: (colour, marker)}, stable across the three plots."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    variants = sorted({r["variant"] for r in runs})
    return {v: (cmap(i % 10), MARKERS[i % len(MARKERS)]) for i, v in enumerate(variants)}


def _label(r: dict) -> str:
    return f"{r['variant']}, γ={'-' if r['gamma'] is None else format(r['gamma'], 'g')}"


def _empty(fig, text: str) -> None:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def plot_accuracy_vs_flops(runs: list[dict], path: str) -> None:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(8.5, 5), layout="constrained")
    pruned = [r for r in runs if r["pruned"] and r["flops_kept"] is not None and r["pruned_top1"] is not None]
    if not pruned:
        _empty(fig, "no run has pruning results")
        fig.savefig(path, dpi=120)
        return
    style = _style(runs)
    ax = fig.add_subplot()
    xs = [100 * r["flops_kept"] for r in pruned]
    ys = [100 * v for r in pruned for v in (r["top1"], r["pruned_top1"]) if v is not None]
    tol_x, tol_y = 0.03 * (max(xs) - min(xs) or 1.0), 0.03 * (max(ys) - min(ys) or 1.0)
    placed = []  # labels of (nearly) coincident points are stacked, not overprinted
    for r in pruned:
        color, marker = style[r["variant"]]
        x, y = 100 * r["flops_kept"], 100 * r["pruned_top1"]
        if r["top1"] is not None:
            y0 = 100 * r["top1"]
            ax.plot([x, x], [y0, y], color=color, lw=0.8, alpha=0.5, zorder=1)
            ax.scatter([x], [y0], s=60, marker=marker, facecolors="none", edgecolors=color, zorder=2)
        ax.scatter([x], [y], s=60, marker=marker, color=color, zorder=3)
        if r["gamma"] is not None:
            k = sum(abs(x - px) < tol_x and abs(y - py) < tol_y for px, py in placed)
            placed.append((x, y))
            ax.annotate(f"γ={r['gamma']:g}", (x, y), xytext=(7, 3 - 10 * k), textcoords="offset points",
                        fontsize=8, color=color, va="center")
    ax.set_xlabel("FLOPs kept after pruning (%)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Test accuracy vs FLOPs kept")
    ax.grid(alpha=0.3)
    ax.set_xlim(0, 105)  # the whole range: a cluster of runs is not blown up into a false spread
    lo, hi = min(ys), max(ys)
    pad = max(0.12 * (hi - lo), 1.0)
    ax.set_ylim(max(lo - pad, 0.0), min(hi + pad, 100.0))
    handles = [Line2D([], [], ls="", marker=m, color=c, label=v) for v, (c, m) in style.items()
               if any(r["variant"] == v for r in pruned)]
    handles += [Line2D([], [], ls="", marker="o", color="gray", label="after pruning"),
                Line2D([], [], ls="", marker="o", color="gray", markerfacecolor="none", label="before pruning")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.savefig(path, dpi=120)


def _edges(steps: list[float]) -> list[float]:
    """Cell edges around (sorted, distinct) x positions, for pcolormesh."""
    if len(steps) == 1:
        return [steps[0] - 0.5, steps[0] + 0.5]
    mids = [(a + b) / 2 for a, b in zip(steps, steps[1:])]
    return [steps[0] - (mids[0] - steps[0])] + mids + [steps[-1] + (steps[-1] - mids[-1])]


def heatmap_data(r: dict) -> tuple[list[float], list[list[float]]] | None:
    """(steps, zero fraction [layer][step]) from the gate history, one column per step (the
    last record of a step wins: a log step and an epoch end can coincide)."""
    channels = r["channels"]
    by_step = {}
    for h in r["history"]:
        if "step" in h and h.get("zeros") and len(h["zeros"]) == len(channels):
            by_step[h["step"]] = h["zeros"]
    if not by_step or not channels:
        return None
    steps = sorted(by_step)
    frac = [[by_step[s][i] / c if c else 0.0 for s in steps] for i, c in enumerate(channels)]
    return steps, frac


def plot_zero_gate_heatmap(runs: list[dict], path: str) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    n = len(runs)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    nlayers = max((len(r["channels"]) for r in runs), default=1)
    height = max(2.0, 0.22 * nlayers + 1.2)
    fig = Figure(figsize=(4.2 * ncols + 1.0, height * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    mesh = None
    for k, r in enumerate(runs):
        ax = axes[k // ncols][k % ncols]
        name = r["name"] if len(r["name"]) <= 48 else r["name"][:23] + "…" + r["name"][-23:]
        ax.set_title(f"{_label(r)}\n{name}", fontsize=8)
        data = heatmap_data(r)
        if data is None:
            ax.text(0.5, 0.5, "no gate history", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        steps, frac = data
        layers = r["layers"]
        mesh = ax.pcolormesh(_edges(steps), range(len(layers) + 1), frac, vmin=0.0, vmax=1.0,
                             cmap="viridis", shading="flat")
        ax.set_yticks([i + 0.5 for i in range(len(layers))], layers, fontsize=7)
        ax.invert_yaxis()
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))  # log and epoch steps can be close
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel("training step", fontsize=8)
        if k % ncols == 0:
            ax.set_ylabel("layer", fontsize=8)
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].set_axis_off()
    fig.suptitle("Fraction of zero gates per layer during training")
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, label="fraction of zero gates", shrink=0.9)
    fig.savefig(path, dpi=120)


def trajectory_data(r: dict):
    """(steps, q10, q50, q90) with q*[layer][step] from the history's latent-gate quantiles, or
    None for runs logged before quantiles existed."""
    by_step = {}
    for h in r["history"]:
        qs = h.get("quantiles")
        if "step" in h and qs and len(qs) == len(r["channels"]):
            by_step[h["step"]] = qs
    if not by_step:
        return None
    steps = sorted(by_step)
    pick = lambda j: [[by_step[s][i][j] for s in steps] for i in range(len(r["channels"]))]  # noqa: E731
    return steps, pick(0), pick(2), pick(4)  # stats.QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def plot_gate_trajectories(runs: list[dict], path: str) -> None:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    n = len(runs)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.6 * ncols + 1.2, 3.4 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    cmap = colormaps["viridis"]
    for k, r in enumerate(runs):
        ax = axes[k // ncols][k % ncols]
        name = r["name"] if len(r["name"]) <= 48 else r["name"][:23] + "…" + r["name"][-23:]
        ax.set_title(f"{_label(r)}\n{name}", fontsize=8)
        data = trajectory_data(r)
        if data is None:
            ax.text(0.5, 0.5, "no gate quantiles logged", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        steps, lo, mid, hi = data
        layers = r["layers"]
        for i in range(len(layers)):
            color = cmap(i / max(len(layers) - 1, 1))
            ax.fill_between(steps, lo[i], hi[i], color=color, alpha=0.12, lw=0)
            ax.plot(steps, mid[i], color=color, lw=1.2, label=layers[i])
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel("latent gate", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=6, ncol=2, loc="best")
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].set_axis_off()
    fig.suptitle("Gate trajectories: per-layer median, 10-90% band")
    fig.savefig(path, dpi=120)


def _gamma_colors(runs: list[dict]) -> dict:
    """{gamma: colour}: a sequential colour map over the distinct gammas, darker = larger."""
    from matplotlib import colormaps

    cmap = colormaps["plasma"]
    gammas = sorted({r["gamma"] for r in runs}, key=lambda g: math.inf if g is None else g)
    n = len(gammas)
    return {g: cmap(0.8 - 0.6 * i / max(n - 1, 1)) for i, g in enumerate(gammas)}


def plot_kept_widths(runs: list[dict], path: str) -> None:
    from matplotlib.figure import Figure

    pruned = [r for r in runs if r["pruned"] and r["kept_widths"]]
    variants = sorted({r["variant"] for r in pruned})
    ncols = min(max(len(variants), 1), 2)
    nrows = max(math.ceil(len(variants) / ncols), 1)
    fig = Figure(figsize=(6.2 * ncols, 3.8 * nrows + 0.5), layout="constrained")
    if not pruned:
        _empty(fig, "no run has pruning results")
        fig.savefig(path, dpi=120)
        return
    style = _style(runs)
    colors = _gamma_colors(pruned)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for k, variant in enumerate(variants):
        ax = axes[k // ncols][k % ncols]
        group = [r for r in pruned if r["variant"] == variant]
        dense_seen = []
        for r in group:
            if r["dense_widths"] not in dense_seen:
                dense_seen.append(r["dense_widths"])
        for i, widths in enumerate(dense_seen):
            ax.plot(range(len(widths)), widths, ls=(0, (4, 3)), color="0.3", lw=1.3, zorder=3,
                    label="dense" if i == 0 else None)  # on top: visible where nothing was pruned
        marker = style[variant][1]
        for r in group:
            g = "-" if r["gamma"] is None else format(r["gamma"], "g")
            ax.plot(range(len(r["kept_widths"])), r["kept_widths"], marker=marker, ms=4, lw=1.5,
                    color=colors[r["gamma"]], label=f"γ={g}", zorder=2)
        longest = max(group, key=lambda r: len(r["kept_widths"]))
        n = len(longest["kept_widths"])
        ax.set_xticks(range(n), longest["layers"][:n], rotation=45 if n > 8 else 0, fontsize=8)
        ax.set_ylim(bottom=0)
        ax.set_title(variant)
        ax.set_xlabel("conv layer")
        if k % ncols == 0:
            ax.set_ylabel("output channels kept")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for k in range(len(variants), nrows * ncols):
        axes[k // ncols][k % ncols].set_axis_off()
    fig.suptitle("Kept width per layer after pruning (dashed: dense network)")
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------- entry point

def write_report(root: str, out: str | None = None) -> tuple[str, list[dict]]:
    """Write report.md and the plots; returns (report.md path, runs)."""
    from gated_pruning.cli import staged

    runs = load_runs(root)
    out = out or os.path.join(root, "report")
    with staged(out, replace=True) as tmp:  # all files or none: a failure leaves no half report
        plot_accuracy_vs_flops(runs, os.path.join(tmp, PLOTS[0]))
        plot_zero_gate_heatmap(runs, os.path.join(tmp, PLOTS[1]))
        plot_kept_widths(runs, os.path.join(tmp, PLOTS[2]))
        plot_gate_trajectories(runs, os.path.join(tmp, PLOTS[3]))
        with open(os.path.join(tmp, "report.md"), "w") as f:
            f.write(markdown_report(runs, root))
    return os.path.join(out, "report.md"), runs


def main(argv: list[str] | None = None) -> int:
    from gated_pruning.cli import ArgumentParser, run_tool

    parser = ArgumentParser(prog="python -m gated_pruning.report", description=__doc__.split("\n")[0])
    parser.add_argument("dir", help="a Hydra multirun folder, or any folder with results.json files below it")
    parser.add_argument("--out", default=None, help="output folder (default: DIR/report)")
    return run_tool(_report, parser.parse_args(argv))


def _report(args) -> int:
    md, runs = write_report(args.dir, args.out)
    print(markdown_table(runs))
    print(f"\nwrote {md} and {', '.join(PLOTS)} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
