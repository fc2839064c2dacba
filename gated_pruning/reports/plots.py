"""Every figure the reports draw, readable however many runs they show: runs of one setting are
drawn as one (their mean), at most MAX_PANELS panels and MAX_LEGEND legend entries (the rest are
named as left out), and no figure larger than MAX_INCHES at DPI.

Sweep report: accuracy vs FLOPs kept, zero gates per layer over training, kept widths per layer,
gate trajectories. Comparison: final top-1 vs FLOPs kept, one series per method.

matplotlib is imported inside the functions that draw: it takes 0.55 s (measured), which a
report refused before any work (a bad flag, a folder it may not replace) should not wait for.
"""
from __future__ import annotations

import math
import statistics

MAX_PANELS = 12
MAX_LEGEND = 10
MAX_INCHES = (16.0, 14.0)
DPI = 120
MARKERS = "osD^vP*Xh<>"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(min(width, MAX_INCHES[0]), min(height, MAX_INCHES[1])), layout="constrained")


def _save_unpruned(fig, path: str) -> None:
    """A figure that says there is nothing to draw: no run was pruned."""
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, "no run has pruning results", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    fig.savefig(path, dpi=DPI)


def _capped(handles: list, k: int = MAX_LEGEND) -> list:
    """At most k legend entries; the last then says how many were left out."""
    from matplotlib.lines import Line2D

    if len(handles) <= k:
        return handles
    return handles[:k - 1] + [Line2D([], [], ls="", label=f"... and {len(handles) - (k - 1)} more")]


def _spread(items: list, k: int) -> list:
    """`items`, or k of them evenly spaced (first and last included) when there are more."""
    if len(items) <= k:
        return items
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def setting_groups(runs: list) -> list[tuple[tuple, list]]:
    """[((variant, gamma), runs)] in the runs' order: the runs of one setting (its seeds)."""
    by = {}
    for r in runs:
        by.setdefault((r.variant, r.gamma), []).append(r)
    return list(by.items())


def _label(variant: str, gamma) -> str:
    return f"{variant}, γ={'-' if gamma is None else format(gamma, 'g')}"


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _mean_by_step(series: list) -> tuple[list, list]:
    """[(steps, values[layer][step])] of several runs -> (steps, mean[layer][step]) over the
    runs that logged each step."""
    acc = {}
    for steps, values in series:
        for j, s in enumerate(steps):
            acc.setdefault(s, []).append([layer[j] for layer in values])
    steps = sorted(acc)
    per_step = [[statistics.fmean(v) for v in zip(*acc[s])] for s in steps]
    return steps, [list(layer) for layer in zip(*per_step)]


def heatmap_data(r) -> tuple[list, list] | None:
    """(steps, zero fraction [layer][step]) from the gate history, one column per step (the last
    record of a step wins: a log step and an epoch end can coincide)."""
    by_step = {h["step"]: h["zeros"] for h in r.history}
    if not by_step or not r.channels:
        return None
    steps = sorted(by_step)
    return steps, [[by_step[s][i] / c if c else 0.0 for s in steps] for i, c in enumerate(r.channels)]


def trajectory_data(r):
    """(steps, q10, q50, q90) with q*[layer][step] from the history's latent-gate quantiles, or
    None for runs logged before quantiles existed."""
    by_step = {h["step"]: h["quantiles"] for h in r.history if h.get("quantiles")}
    if not by_step:
        return None
    steps = sorted(by_step)
    pick = lambda j: [[by_step[s][i][j] for s in steps] for i in range(len(r.channels))]  # noqa: E731
    return steps, pick(0), pick(2), pick(4)  # stats.QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _panels(runs: list, data, title: str, panel: tuple[float, float]):
    """A figure with one panel per setting, at most MAX_PANELS: returns (figure, axes, cells), a
    cell (axes, runs, data or None) per panel, `data` the mean over the setting's runs of
    `data(run)` = (steps, series[layer][step], ...), each step averaged over the runs that logged it."""
    groups = setting_groups(runs)
    shown = _spread(groups, MAX_PANELS)
    ncols = max(min(len(shown), 3), 1)
    nrows = math.ceil(len(shown) / ncols)
    fig = _figure(panel[0] * ncols + 1.2, panel[1] * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    cells = []
    for k, ((variant, gamma), rs) in enumerate(shown):
        ax = axes[k // ncols][k % ncols]
        name = rs[0].name if len(rs[0].name) <= 48 else rs[0].name[:23] + "…" + rs[0].name[-23:]
        ax.set_title(f"{_label(variant, gamma)}\n{name if len(rs) == 1 else f'mean of {len(rs)} runs'}", fontsize=8)
        series = [(r, d) for r in rs if (d := data(r)) is not None]
        series = [(r, d) for r, d in series if len(r.channels) == len(series[0][0].channels)]
        if not series:
            cells.append((ax, rs, None))
            continue
        parts = list(zip(*[d[1:] for _, d in series]))  # per quantity: the runs' [layer][step]
        merged = [_mean_by_step([(d[0], q) for (_, d), q in zip(series, part)]) for part in parts]
        cells.append((ax, [r for r, _ in series], (merged[0][0], *[m[1] for m in merged])))
    for k in range(len(shown), nrows * ncols):
        axes[k // ncols][k % ncols].set_axis_off()
    note = f" ({len(shown)} of {len(groups)} settings, evenly spaced)" if len(shown) < len(groups) else ""
    fig.suptitle(title + note)
    return fig, axes, cells


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_zero_gate_heatmap(runs: list, path: str) -> None:
    from matplotlib.ticker import MaxNLocator

    nlayers = max((len(r.channels) for r in runs), default=1)
    fig, axes, cells = _panels(runs, heatmap_data, "Fraction of zero gates per layer during training",
                               (4.2, max(2.0, 0.22 * nlayers + 1.2)))
    mesh = None
    for k, (ax, rs, data) in enumerate(cells):
        if data is None:
            _no_data(ax, "no gate history")
            continue
        steps, frac = data
        layers = rs[0].layers
        mesh = ax.pcolormesh(_edges(steps), range(len(layers) + 1), frac, vmin=0.0, vmax=1.0,
                             cmap="viridis", shading="flat")
        ax.set_yticks([i + 0.5 for i in range(len(layers))], layers, fontsize=7)
        ax.invert_yaxis()
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))  # log and epoch steps can be close
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel("training step", fontsize=8)
        if k % 3 == 0:
            ax.set_ylabel("layer", fontsize=8)
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, label="fraction of zero gates", shrink=0.9)
    fig.savefig(path, dpi=DPI)


def _edges(steps: list) -> list:
    """Cell edges around (sorted, distinct) x positions, for pcolormesh."""
    if len(steps) == 1:
        return [steps[0] - 0.5, steps[0] + 0.5]
    mids = [(a + b) / 2 for a, b in zip(steps, steps[1:])]
    return [steps[0] - (mids[0] - steps[0])] + mids + [steps[-1] + (steps[-1] - mids[-1])]


def plot_gate_trajectories(runs: list, path: str) -> None:
    from matplotlib import colormaps

    fig, axes, cells = _panels(runs, trajectory_data, "Gate trajectories: per-layer median, 10-90% band", (4.6, 3.4))
    cmap = colormaps["viridis"]
    first = True
    for ax, rs, data in cells:
        if data is None:
            _no_data(ax, "no gate quantiles logged")
            continue
        steps, lo, mid, hi = data
        layers = rs[0].layers
        for i in range(len(layers)):
            color = cmap(i / max(len(layers) - 1, 1))
            ax.fill_between(steps, lo[i], hi[i], color=color, alpha=0.12, lw=0)
            ax.plot(steps, mid[i], color=color, lw=1.2, label=layers[i])
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel("latent gate", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if first:
            ax.legend(fontsize=6, ncol=2, loc="best")
            first = False
    fig.savefig(path, dpi=DPI)


def _variant_styles(runs: list) -> dict:
    """{variant: (colour, marker)}, stable across the sweep's plots."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {v: (cmap(i % 10), MARKERS[i % len(MARKERS)]) for i, v in enumerate(sorted({r.variant for r in runs}))}


def plot_accuracy_vs_flops(runs: list, path: str) -> None:
    """Per setting: top-1 after the cut (filled) and before it (hollow) against the FLOPs kept."""
    from matplotlib.lines import Line2D

    fig = _figure(8.5, 5)
    pruned = [r for r in runs if r.pruned and r.pruned_flops_kept is not None and r.test["cut"] is not None]
    if not pruned:
        _save_unpruned(fig, path)
        return
    style = _variant_styles(runs)
    ax = fig.add_subplot()
    points = []
    for (variant, gamma), rs in setting_groups(pruned):
        x, y, y0 = (_mean(100 * v if v is not None else None for v in vs) for vs in
                    ([r.pruned_flops_kept for r in rs], [r.test["cut"] for r in rs], [r.test["trained"] for r in rs]))
        sd = statistics.stdev(100 * r.test["cut"] for r in rs) if len(rs) > 1 else 0.0
        points.append((variant, gamma, x, y, y0, sd))
    xs, ys = [p[2] for p in points], [v for p in points for v in (p[3], p[4]) if v is not None]
    tol_x, tol_y = 0.03 * (max(xs) - min(xs) or 1.0), 0.03 * (max(ys) - min(ys) or 1.0)
    placed, label = [], len(points) <= 30  # labels of (nearly) coincident points are stacked
    for variant, gamma, x, y, y0, sd in points:
        color, marker = style[variant]
        if y0 is not None:
            ax.plot([x, x], [y0, y], color=color, lw=0.8, alpha=0.5, zorder=1)
            ax.scatter([x], [y0], s=60, marker=marker, facecolors="none", edgecolors=color, zorder=2)
        ax.scatter([x], [y], s=60, marker=marker, color=color, zorder=3)
        if sd:
            ax.errorbar([x], [y], yerr=[sd], fmt="none", color=color, capsize=2, zorder=3)
        if label and gamma is not None:
            k = sum(abs(x - px) < tol_x and abs(y - py) < tol_y for px, py in placed)
            placed.append((x, y))
            ax.annotate(f"γ={gamma:g}", (x, y), xytext=(7, 3 - 10 * k), textcoords="offset points",
                        fontsize=8, color=color, va="center")
    ax.set_xlabel("FLOPs kept after pruning (%)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Test accuracy vs FLOPs kept" + ("" if len(points) == len(pruned) else " (mean ± std of each setting)"))
    ax.grid(alpha=0.3)
    ax.set_xlim(0, 105)  # the whole range: a cluster of runs is not blown up into a false spread
    lo, hi = min(ys), max(ys)
    pad = max(0.12 * (hi - lo), 1.0)
    ax.set_ylim(max(lo - pad, 0.0), min(hi + pad, 100.0))
    handles = [Line2D([], [], ls="", marker=m, color=c, label=v) for v, (c, m) in style.items()
               if any(r.variant == v for r in pruned)]
    handles = _capped(handles, MAX_LEGEND - 2) + [
        Line2D([], [], ls="", marker="o", color="gray", label="after pruning"),
        Line2D([], [], ls="", marker="o", color="gray", markerfacecolor="none", label="before pruning")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.savefig(path, dpi=DPI)


def _gamma_colors(gammas) -> dict:
    """{gamma: colour}: a sequential colour map over the distinct gammas, darker = larger."""
    from matplotlib import colormaps

    cmap = colormaps["plasma"]
    gammas = sorted(set(gammas), key=lambda g: math.inf if g is None else g)
    return {g: cmap(0.8 - 0.6 * i / max(len(gammas) - 1, 1)) for i, g in enumerate(gammas)}


def plot_kept_widths(runs: list, path: str) -> None:
    """Per variant (at most 6 panels): kept width per layer of each gamma (the mean of its runs)."""
    from matplotlib.lines import Line2D

    pruned = [r for r in runs if r.pruned]
    variants = sorted({r.variant for r in pruned})
    shown = _spread(variants, 6)
    ncols = min(max(len(shown), 1), 2)
    nrows = max(math.ceil(len(shown) / ncols), 1)
    fig = _figure(6.2 * ncols, 3.8 * nrows + 0.5)
    if not pruned:
        _save_unpruned(fig, path)
        return
    style = _variant_styles(runs)
    colors = _gamma_colors(r.gamma for r in pruned)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for k, variant in enumerate(shown):
        ax = axes[k // ncols][k % ncols]
        group = [r for r in pruned if r.variant == variant]
        dense_seen = []
        for r in group:
            if r.dense_widths not in dense_seen:
                dense_seen.append(r.dense_widths)
        handles, lines = [], []
        for i, widths in enumerate(dense_seen):  # on top: visible where nothing was pruned
            line, = ax.plot(range(len(widths)), widths, ls=(0, (4, 3)), color="0.3", lw=1.3, zorder=3, label="dense")
            handles += [line] if i == 0 else []
        for (_, gamma), rs in setting_groups(group):
            rs = [r for r in rs if len(r.kept_widths) == len(rs[0].kept_widths)]
            widths = [statistics.fmean(w) for w in zip(*(r.kept_widths for r in rs))]
            g = "-" if gamma is None else format(gamma, "g")
            line, = ax.plot(range(len(widths)), widths, marker=style[variant][1], ms=4, lw=1.5, color=colors[gamma],
                            label=f"γ={g}" + (f" ({len(rs)} runs)" if len(rs) > 1 else ""), zorder=2)
            lines.append(line)
        longest = max(group, key=lambda r: len(r.kept_widths))
        n = len(longest.kept_widths)
        ax.set_xticks(range(n), longest.layers[:n], rotation=45 if n > 8 else 0, fontsize=8)
        ax.set_ylim(bottom=0)
        ax.set_title(variant)
        ax.set_xlabel("conv layer")
        if k % ncols == 0:
            ax.set_ylabel("output channels kept")
        ax.grid(alpha=0.3)
        if len(lines) > MAX_LEGEND - 2:  # the smallest and largest gamma, and how many between
            lines = [lines[0], Line2D([], [], ls="", label=f"{len(lines) - 2} more γ (darker = larger)"), lines[-1]]
        ax.legend(handles=handles + lines, fontsize=8, loc="best")
    for k in range(len(shown), nrows * ncols):
        axes[k // ncols][k % ncols].set_axis_off()
    note = f" ({len(shown)} of {len(variants)} variants)" if len(shown) < len(variants) else ""
    fig.suptitle("Kept width per layer after pruning (dashed: dense network)" + note)
    fig.savefig(path, dpi=DPI)


def plot_comparison(rows: list, path: str, title: str) -> None:
    """Final test top-1 against FLOPs kept: a series per method and gate kind, the dense rows as
    lines with their seed spread as a band."""
    from matplotlib import colormaps

    fig = _figure(8.5, 5.2)
    ax = fig.add_subplot()
    dense = [r for r in rows if r["method"] == "dense" and r["final"] is not None]
    main = max(dense, key=lambda r: r["n"]) if dense else None  # the dense reference: most seeds
    for r in dense:
        ls, color = ("--", "0.3") if r is main else (":", "0.55")
        ax.axhline(100 * r["final"], color=color, ls=ls, lw=1.2,
                   label=f"dense, {r['epochs']} epochs ({r['n']} seed{'s' if r['n'] > 1 else ''})")
        if r["final_std"] is not None:
            ax.axhspan(100 * (r["final"] - r["final_std"]), 100 * (r["final"] + r["final_std"]),
                       color="0.5", alpha=0.15, lw=0)
    series = {}
    for r in rows:
        if r["method"] != "dense" and r["flops_kept"] is not None and r["final"] is not None:
            series.setdefault((r["method"], r["gates"]), []).append(r)
    cmap = colormaps["tab10"]
    for i, ((method, gates), rs) in enumerate(sorted(series.items())):
        rs = sorted(rs, key=lambda r: r["flops_kept"])
        ax.errorbar([100 * r["flops_kept"] for r in rs], [100 * r["final"] for r in rs],
                    yerr=[100 * (r["final_std"] or 0.0) for r in rs], color=cmap(i % 10),
                    marker=MARKERS[i % len(MARKERS)], ms=6, lw=1.3, capsize=3,
                    label=method if gates in ("-", "float") else f"{method}, {gates}")
    ax.set_xlabel("FLOPs kept (% of the dense network)")
    ax.set_ylabel("final test top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.set_xlim(0, 105)
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=_capped(handles, 2 * MAX_LEGEND), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, dpi=DPI)


def plot_curves(runs: list, path: str, title: str) -> None:
    """Val top-1 (test where a run had no validation split) after every epoch, a line per run,
    a colour per recipe."""
    from matplotlib import colormaps

    fig = _figure(8.5, 5.0)
    ax = fig.add_subplot()
    recipes = sorted({r.recipe for r in runs})
    cmap = colormaps["tab10"]
    handles = []
    for r in sorted(runs, key=lambda r: (r.recipe, r.epochs or 0)):
        key = "val_top1" if any("val_top1" in c for c in r.curve) else "test_top1"
        points_ = [(c["epoch"], c[key]) for c in r.curve if isinstance(c.get(key), (int, float))]
        if not points_:
            continue
        color = cmap(recipes.index(r.recipe) % 10)
        (line,) = ax.plot([e for e, _ in points_], [100 * v for _, v in points_], color=color, lw=1.2, marker="o",
                          ms=2.5, label=r.recipe)
        if r.recipe not in [h.get_label() for h in handles]:
            handles.append(line)
    if not handles:
        _no_data(ax, "no run recorded its per-epoch curve")
    else:
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 % (val; test without a split)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(handles=_capped(handles), fontsize=7, loc="lower right")
    fig.savefig(path, dpi=DPI)
