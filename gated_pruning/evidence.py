"""The evidence report: methods compared at matched FLOPs, seeds aggregated, from the runs themselves.

    python -m gated_pruning.evidence NAME DIR [DIR ...] [--out docs/results] [--readme README.md]

Reads every results.json below the DIRs (training runs and the records that
`python -m gated_pruning.prune` writes for a cut of a finished run) and writes
`OUT/NAME/results.md` (one row per method, gate kind and FLOPs target: FLOPs and params kept,
top-1 of the trained network, after cutting, after fine-tuning, and the final network's, as
mean ± sample std over seeds, with the seeds), `OUT/NAME/accuracy_vs_flops.png` (final top-1
against FLOPs kept, one series per method, the dense network as a line) and
`OUT/NAME/runs.json` (the per-run numbers behind them). With `--readme`, the table also replaces
the README's section between `<!-- results:NAME -->` and `<!-- /results:NAME -->`.

A run's method is its `method=` choice (conf/method/), or the `--method` label of a prune record;
runs without either are labelled by their gates (`gated`) or `dense`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys

from gated_pruning.report import ReportError, find_results

BINARIZERS = {"NoBinarizer": "float", "ThresholdBinarizer": "binary (threshold STE)",
              "StochasticBinarizer": "binary (stochastic STE)", "HardConcreteBinarizer": "binary (hard concrete)"}
COLUMNS = ("method", "gates", "target FLOPs", "epochs", "FLOPs kept %", "params kept %", "top-1 trained %",
           "top-1 cut %", "top-1 fine-tuned %", "top-1 final %", "seeds")


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def record(res: dict, path: str) -> dict:
    """The numbers of one run that the evidence report uses."""
    config = res.get("config") or {}
    prune = res.get("prune") or {}
    gated = bool(_get(config, "model", "gated"))
    method = res.get("method") or _get(res, "choices", "method") or ("gated" if gated else "dense")
    target = res.get("target_flops")
    if target is None:
        target = config.get("target_flops") if method != "dense" else None
    if target is None:
        target = _get(config, "prune", "target_flops")
    binarizer = (_get(config, "binarizer", "_target_") or "").rsplit(".", 1)[-1]
    cost = res.get("cost") or {}
    trained = _get(res, "metrics", "test", "top1")
    cut = _get(prune, "test", "compact", "top1")
    tuned = _get(prune, "finetune", "test", "top1")
    final = tuned if tuned is not None else cut if cut is not None else trained
    return {
        "path": path, "method": method, "gates": BINARIZERS.get(binarizer, binarizer) if gated else "-",
        "target": target, "seed": config.get("seed"),
        "flops_kept": cost.get("flops_kept", _get(prune, "kept", "flops")),
        "params_kept": cost.get("params_kept", _get(prune, "kept", "params")),
        "trained": trained if res.get("derived_from") is None else _get(prune, "test", "dense", "top1"),
        "cut": cut, "finetuned": tuned, "final": final,
        "epochs": _get(config, "trainer", "epochs") if res.get("derived_from") is None
        else f"{_get(config, 'trainer', 'epochs')}+{_get(prune, 'finetune', 'epochs') or 0}",
        "gamma": config.get("gamma") if gated and target is None else None,
        "dead_layers": prune.get("dead_layers") or [],
        "nonzero_mean": _get(res, "gates", "final", "nonzero_mean"),
        "kept_widths": _get(prune, "compact", "widths"),
        "dense_widths": _get(cost, "reference", "widths"),
        "derived": res.get("derived_from") is not None,
    }


def load(dirs: list[str]) -> list[dict]:
    runs = []
    for d in dirs:
        if not os.path.isdir(d):
            raise ReportError(f"{d} is not a directory")
        paths = find_results(d)
        if not paths:
            raise ReportError(f"no results.json found under {d}")
        for p in paths:
            try:
                with open(p) as f:
                    runs.append(record(json.load(f), p))
            except (OSError, ValueError, AttributeError) as e:
                raise ReportError(f"{p} is not a readable run record ({e})") from None
    return runs


def mean_std(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def groups(runs: list[dict]) -> list[dict]:
    """One row per (method, gates, target, epochs, and gamma for fixed-gamma runs): means and
    spreads over its seeds."""
    by = {}
    for r in runs:
        by.setdefault((r["method"], r["gates"], r["target"], str(r["epochs"]), r["gamma"]), []).append(r)
    rows = []
    for (method, gates, target, epochs, gamma), rs in by.items():
        name = method if gamma is None else f"{method} (gamma {gamma:g})"
        row = {"method": name, "gates": gates, "target": target, "epochs": epochs, "n": len(rs),
               "seeds": sorted(r["seed"] for r in rs if r["seed"] is not None)}
        for key in ("flops_kept", "params_kept", "trained", "cut", "finetuned", "final"):
            row[key], row[key + "_std"] = mean_std([r[key] for r in rs])
        rows.append(row)
    order = lambda r: (r["method"] != "dense", r["method"], r["gates"],  # noqa: E731
                       math.inf if r["target"] is None else r["target"], len(r["epochs"]), r["epochs"])
    return sorted(rows, key=order)


WINDOW = (0.2, 0.9)  # a gamma is inside the window when it keeps 20-90% of the FLOPs, no layer dead


def gamma_windows(runs: list[dict]) -> str:
    """For fixed-gamma runs (gated, no FLOPs target) of each method and gate kind: every gamma
    with its FLOPs kept, dead layers and top-1, and the window of gammas that keep 20-90% of the
    FLOPs with no dead layer, with its width in decades. Empty when there are no such runs."""
    by = {}
    for r in runs:
        if r["gamma"] is not None and r["flops_kept"] is not None:
            by.setdefault((r["method"], r["gates"]), []).append(r)
    if not by:
        return ""
    lines = ["| method | gates | gamma | FLOPs kept % | dead layers | top-1 % | smallest non-zero gate mean | in window |",
             "|---|---|---|---|---|---|---|---|"]
    summary = []
    for (method, gates), rs in sorted(by.items()):
        rs = sorted(rs, key=lambda r: r["gamma"])
        inside = []
        for r in rs:
            ok = WINDOW[0] <= r["flops_kept"] <= WINDOW[1] and not r["dead_layers"]
            if ok:
                inside.append(r["gamma"])
            means = [m for m in (r["nonzero_mean"] or []) if m]
            smallest = f"{min(means):.2f}" if means else "-"
            lines.append(f"| {method} | {gates} | {r['gamma']:g} | {100 * r['flops_kept']:.1f} | "
                         f"{len(r['dead_layers'])} | {_pct(r['final'])} | {smallest} | {'yes' if ok else 'no'} |")
        tried = ", ".join(format(r["gamma"], "g") for r in rs)
        if len(inside) == 1:
            summary.append(f"- {method}, {gates}: of the gammas tried, only {inside[0]:g} keeps 20-90% of the "
                           f"FLOPs with no dead layer: the window's width is not measured (tried: {tried})")
        elif inside and any(min(inside) < r["gamma"] < max(inside) and r["gamma"] not in inside for r in rs):
            summary.append(f"- {method}, {gates}: the gammas that keep 20-90% of the FLOPs with no dead layer "
                           f"({', '.join(format(g, 'g') for g in inside)}) are not one interval: a gamma "
                           f"between them does not; no window (tried: {tried})")
        elif inside:
            lo, hi = min(inside), max(inside)
            summary.append(f"- {method}, {gates}: gammas {lo:g} to {hi:g} keep 20-90% of the FLOPs with no "
                           f"dead layer, a window of {math.log10(hi / lo):.2f} decades (tried: {tried})")
        else:
            summary.append(f"- {method}, {gates}: no gamma tried keeps 20-90% of the FLOPs with no dead "
                           f"layer (tried: {tried})")
    return "\n".join(lines) + "\n\n" + "\n".join(summary)


def structures(runs: list[dict]) -> str:
    """Per gated training run: the widths it kept per layer (against the dense widths), its dead
    layers and the smallest per-layer mean of its kept non-zero gates. Empty without such runs."""
    rs = [r for r in runs if r["gates"] != "-" and r["kept_widths"] and not r["derived"]]
    if not rs:
        return ""
    lines = ["| run | method | gates | target | seed | kept widths per layer (of the dense widths) | "
             "dead layers | smallest non-zero gate mean |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rs, key=lambda r: (r["method"], r["gates"], r["target"] or 0, r["seed"] or 0)):
        dense = r["dense_widths"] or [None] * len(r["kept_widths"])
        widths = " ".join(str(k) if d is None else f"{k}/{d}" for k, d in zip(r["kept_widths"], dense))
        means = [m for m in (r["nonzero_mean"] or []) if m]
        lines.append(f"| {os.path.basename(os.path.dirname(r['path']))} | {r['method']} | {r['gates']} | "
                     f"{'-' if r['target'] is None else format(r['target'], 'g')} | {r['seed']} | {widths} | "
                     f"{len(r['dead_layers'])} | {f'{min(means):.2f}' if means else '-'} |")
    return "\n".join(lines)


def _pct(mean, std=None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in rows:
        cells = [r["method"], r["gates"], "-" if r["target"] is None else f"{r['target']:g}", r["epochs"],
                 _pct(r["flops_kept"]).split(" ")[0] if r["flops_kept"] is not None else "-",
                 _pct(r["params_kept"]).split(" ")[0] if r["params_kept"] is not None else "-",
                 _pct(r["trained"], r["trained_std"]), _pct(r["cut"], r["cut_std"]),
                 _pct(r["finetuned"], r["finetuned_std"]), _pct(r["final"], r["final_std"]),
                 f"{r['n']} ({', '.join(map(str, r['seeds']))})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str, title: str) -> None:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 5.2), layout="constrained")
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
    ax.set_prop_cycle(None)
    cmap = colormaps["tab10"]
    markers = "osD^vP*Xh<>"
    for i, ((method, gates), rs) in enumerate(sorted(series.items())):
        rs = sorted(rs, key=lambda r: r["flops_kept"])
        label = method if gates in ("-", "float") else f"{method}, {gates}"
        ax.errorbar([100 * r["flops_kept"] for r in rs], [100 * r["final"] for r in rs],
                    yerr=[100 * (r["final_std"] or 0.0) for r in rs], color=cmap(i % 10),
                    marker=markers[i % len(markers)], ms=6, lw=1.3, capsize=3, label=label)
    ax.set_xlabel("FLOPs kept (% of the dense network)")
    ax.set_ylabel("final test top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.set_xlim(0, 105)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, dpi=120)


def write(name: str, dirs: list[str], out: str = os.path.join("docs", "results"), readme: str | None = None,
          label: str = "method") -> str:
    """`label`: what names a row, the run's `method` or its folder (`dir`: exploratory variants)."""
    if readme is not None:  # refuse before writing anything
        try:
            text = open(readme).read()
        except OSError as e:
            raise ReportError(f"cannot read {readme}: {e.strerror}") from None
        if _section_match(text, name) is None:
            raise ReportError(f"{readme} has no section <!-- results:{name} --> ... <!-- /results:{name} --> "
                              "(each marker alone on its line)")
    runs = load(dirs)
    if label == "dir":
        for r in runs:
            r["method"] = os.path.basename(os.path.dirname(r["path"]))
    rows = groups(runs)
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    table = markdown_table(rows)
    windows = gamma_windows(runs)
    body = table  # what the README section holds: the table and, for fixed-gamma runs, the windows
    if windows:
        body += ("\n\nFixed-gamma runs (no FLOPs budget): a gamma is in the window when it keeps 20% to "
                 "90% of the FLOPs with no dead layer. \"smallest non-zero gate mean\" is the smallest "
                 "per-layer mean of the kept non-zero gates at the end (float gates: a uniform shrink "
                 "drives it towards 0).\n\n" + windows)
    with open(os.path.join(folder, "results.md"), "w") as f:
        f.write(f"# {name}\n\nWritten by `python -m gated_pruning.evidence {name} {' '.join(dirs)}"
                f"{' --label dir' if label == 'dir' else ''}` from "
                f"{len(runs)} run records. Top-1 on the test set, mean ± sample std over seeds; "
                "FLOPs and params kept against the dense network; \"final\" is the network the method "
                "delivers (fine-tuned if it fine-tunes, else as cut).\n\n" + body + "\n\n"
                "![accuracy vs FLOPs](accuracy_vs_flops.png)\n")
        kept = structures(runs)
        if kept:
            f.write("\n## What the gates kept\n\nPer gated run: the channels kept in each conv layer "
                    "(channel selection within layers shows as widths that differ from layer to layer, "
                    "not all-or-nothing), layers left with no channel, and the smallest per-layer mean "
                    "of the kept non-zero gates (a uniform shrink of float gates drives it towards 0; "
                    "binary gates are 1).\n\n" + kept + "\n")
    with open(os.path.join(folder, "runs.json"), "w") as f:
        json.dump(runs, f, indent=1)
    plot(rows, os.path.join(folder, "accuracy_vs_flops.png"), f"{name}: final top-1 vs FLOPs kept")
    if readme:
        replace_section(readme, name, body)
    return body


def _section_match(text: str, name: str):
    """The README section of `name`: its markers alone on their lines, so prose may quote them."""
    n = re.escape(name)
    return re.search(rf"^<!-- results:{n} -->\n(.*?)^<!-- /results:{n} -->$", text, re.S | re.M)


def section_names(text: str) -> list[str]:
    """The names of every results section of a README, in order."""
    return re.findall(r"^<!-- results:(\S+) -->$", text, re.M)


def readme_section(text: str, name: str) -> str | None:
    """The text between the README's markers for `name`, or None."""
    m = _section_match(text, name)
    return None if m is None else m.group(1).strip()


def replace_section(readme: str, name: str, table: str) -> None:
    with open(readme) as f:
        text = f.read()
    m = _section_match(text, name)
    if m is None:
        raise ReportError(f"{readme} has no section <!-- results:{name} --> ... <!-- /results:{name} --> "
                          "(each marker alone on its line) to replace")
    with open(readme, "w") as f:
        f.write(text[:m.start(1)] + table + "\n" + text[m.end(1):])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gated_pruning.evidence", description=__doc__.split("\n")[0])
    p.add_argument("name", help="the report's name: its folder under --out")
    p.add_argument("dirs", nargs="+", help="folders with results.json files below them")
    p.add_argument("--out", default=os.path.join("docs", "results"))
    p.add_argument("--readme", help="also replace this README's <!-- results:NAME --> section")
    p.add_argument("--label", choices=("method", "dir"), default="method",
                   help="name rows by the run's method (default) or by its folder (one row per variant)")
    a = p.parse_args(argv)
    try:
        table = write(a.name, a.dirs, a.out, a.readme, a.label)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table)
    print(f"\nwrote {os.path.join(a.out, a.name)}/results.md, accuracy_vs_flops.png, runs.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
