"""The matched-FLOPs comparison: methods side by side at each FLOPs target, seeds aggregated,
differences paired by seed, from the run records themselves.

    python -m gated_pruning.reports.compare NAME DIR [DIR ...] [--out docs/results] [--page docs/results.md] [--pair A:B]

Reads every results.json below the DIRs (training runs and the records that
`python -m gated_pruning.reprune` writes for a cut of a finished run) and writes OUT/NAME/:
`results.md` (a row per method, gate kind, FLOPs target and epochs: FLOPs and params kept, top-1
of the trained network, after cutting, after fine-tuning and of the network delivered, on test
and on val, mean ± sample std over seeds; what each target meant, the gamma a budget ended with,
the thread setting and commits; the paired differences against `uniform` and `dense`; gamma
windows of fixed-gamma runs; what the gates kept), `accuracy_vs_flops.png` and `runs.json` (the
per-run numbers behind them). With `--page`, the tables also replace that page's section between
`<!-- results:NAME -->` and `<!-- /results:NAME -->` (checked before any work, written atomically).
"""
from __future__ import annotations

import json
import math
import os
import sys

from gated_pruning.toolkit import run_tool
from gated_pruning.reports import output, plots
from gated_pruning.reports.records import load
from gated_pruning.reports.seeds import mean_std, paired, setting_label
from gated_pruning.reports.tables import DASH, markdown_table, num, pct, points

TOOL = "python -m gated_pruning.reports.compare"
FILES = ("results.md", "accuracy_vs_flops.png", "runs.json")
COLUMNS = ("method", "gates", "target FLOPs", "epochs", "train compute", "FLOPs kept %", "params kept %",
           "top-1 trained %", "top-1 cut %", "top-1 fine-tuned %", "test top-1 final %", "val top-1 final %", "seeds")
TARGET_MEANING = {"budget": "budget (gamma controlled)", "uniform": "uniform width", "cut": "cut after training",
                  "arch_run": "another run's widths", None: DASH}
WINDOW = (0.2, 0.9)  # a gamma is inside the window when it keeps 20-90% of the FLOPs, no layer dead


def load_all(dirs: list[str], label: str = "method") -> list:
    """Every run below the DIRs; `label`: what names a row, the run's method or (`dir`) its folder."""
    runs = [r for d in dirs for r in load(d)]
    for r in runs:
        r.row = os.path.basename(os.path.dirname(r.path)) if label == "dir" else r.method
        if label == "dir":  # a folder name says what the run was: no controller settings appended
            r.budget_overrides = ""
    return runs


def groups(runs: list) -> list[dict]:
    """A row per (method, gates, target and its meaning, epochs, and gamma for fixed-gamma runs or
    the controller's settings unlike the method's for budget runs), per network and data
    (`Run.network`) and per setting (threads, device, processor): means and spreads over its runs
    (its seeds). Runs of two networks, or of two machines, are never averaged into one row; where a
    report holds several, each row's label says which."""
    by = {}
    for r in runs:
        by.setdefault((r.row, r.gates, r.target, r.target_kind, r.epochs_label, r.fixed_gamma, r.budget_overrides,
                       r.network, r.thread_setting), []).append(r)
    several_networks = len({r.network for r in runs}) > 1
    several_settings = len({r.thread_setting for r in runs}) > 1
    rows = []
    for (method, gates, target, kind, epochs, gamma, budget, network, setting), rs in by.items():
        label = method if gamma is None else f"{method} (gamma {gamma:g})"
        label = f"{label} ({budget})" if budget else label
        where = [network] * several_networks + [setting_label(setting)] * several_settings
        row = {"method": label + (f" [{'; '.join(where)}]" if where else ""), "gates": gates,
               "target": target, "kind": kind, "epochs": epochs, "n": len(rs), "runs": rs,
               "network": network, "seeds": sorted(r.seed for r in rs if r.seed is not None)}
        for key, value in (("compute", lambda r: r.compute),
                           ("flops_kept", lambda r: r.flops_kept), ("params_kept", lambda r: r.params_kept),
                           ("trained", lambda r: r.test["trained"]), ("cut", lambda r: r.test["cut"]),
                           ("finetuned", lambda r: r.test["finetuned"]), ("final", lambda r: r.final),
                           ("final_val", lambda r: r.final_val)):
            row[key], row[key + "_std"] = mean_std([value(r) for r in rs])
        rows.append(row)
    order = lambda r: (r["method"] != "dense", r["method"], r["gates"],  # noqa: E731
                       math.inf if r["target"] is None else r["target"], len(r["epochs"]), r["epochs"])
    return sorted(rows, key=order)


def main_table(rows: list[dict]) -> str:
    return markdown_table(COLUMNS, [
        [r["method"], r["gates"], num(r["target"]), r["epochs"], num(r["compute"], ".1f"), pct(r["flops_kept"]),
         pct(r["params_kept"]),
         pct(r["trained"], r["trained_std"]), pct(r["cut"], r["cut_std"]), pct(r["finetuned"], r["finetuned_std"]),
         pct(r["final"], r["final_std"]), pct(r["final_val"], r["final_val_std"]),
         f"{r['n']} ({', '.join(map(str, r['seeds']))})"] for r in rows])


def _gamma_end(rs: list) -> str:
    """The gamma each budget run ended with, by seed; a freeze sets it to 0: its last gamma before."""
    if not any(r.target_kind == "budget" for r in rs):
        return DASH
    cells = []
    for r in sorted(rs, key=lambda r: (r.seed is None, r.seed or 0)):
        if r.gamma_at_freeze is not None:
            cells.append(f"0 (frozen; {r.gamma_at_freeze:.2g} before)")
        else:
            cells.append(num(r.gamma_end, ".2g"))
    return ", ".join(cells)


def _commits(rs: list) -> str:
    """The short commits of the runs, `(dirty)` where the tree had uncommitted changes."""
    seen = []
    for r in rs:
        c = DASH if not r.commit else r.commit if r.commit == "unknown" else r.commit[:7]
        c += " (dirty)" if r.dirty is True else ""
        if c not in seen:
            seen.append(c)
    return ", ".join(seen)


def provenance_table(rows: list[dict]) -> str:
    """Per row: what its FLOPs target meant, the gamma a budget ended with, threads and commits."""
    return markdown_table(("method", "gates", "target FLOPs", "epochs", "target is", "gamma at end", "threads",
                           "commits"), [
        [r["method"], r["gates"], num(r["target"]), r["epochs"], TARGET_MEANING.get(r["kind"], r["kind"]),
         _gamma_end(r["runs"]), ", ".join(DASH if t is None else str(t) for t in
                                          sorted({x.threads for x in r["runs"]}, key=lambda t: (t is not None, t or 0))),
         _commits(r["runs"])] for r in rows])


def pairings(rows: list[dict], runs: list) -> list[dict]:
    """Per row and thread setting: its paired differences against `uniform` at its FLOPs target
    and training epochs, and against `dense` at its training epochs (a run trained for the compute
    of a dense run, Scratch-B: at the epochs of that compute)."""
    out = []
    for row in rows:
        rs = row["runs"]
        epochs = rs[0].epochs
        refs = {}
        mine = [r for r in runs if r.network == row["network"] and not r.derived]  # of the same network and data
        if rs[0].method != "uniform" and row["target"] is not None:
            refs["uniform"] = [r for r in mine if r.method == "uniform" and r.epochs == epochs
                               and r.target == row["target"]]
        if rs[0].method != "dense":
            same = rs[0].compute_epochs or epochs
            refs["dense"] = [r for r in mine if r.method == "dense" and r.epochs == same]
        found = {}
        for ref, members in refs.items():
            for entry in paired(rs, members):
                found.setdefault(entry["setting"], {})[ref] = entry
        out += [{"row": row, "setting": setting, **by_ref} for setting, by_ref in found.items()]
    return out


def paired_table(pairs: list[dict]) -> str:
    def cells(entry):
        if entry is None:
            return [DASH, DASH]
        return [points(*entry["test"][:2], entry["test"][2]) if entry["test"][2] else DASH,
                points(*entry["val"][:2], entry["val"][2]) if entry["val"][2] else DASH]

    return markdown_table(("method", "gates", "target FLOPs", "epochs", "thread setting", "vs uniform, test",
                           "vs uniform, val", "vs dense, test", "vs dense, val"), [
        [p["row"]["method"], p["row"]["gates"], num(p["row"]["target"]), p["row"]["epochs"], p["setting"],
         *cells(p.get("uniform")), *cells(p.get("dense"))] for p in pairs])


def contrasts(rows: list[dict], pairs: list[str]) -> str:
    """For each `A:B` of `pairs` (two row methods), the paired difference A - B by seed, per FLOPs
    target, epochs, network and setting where both have runs: what one difference alone costs
    (method=binary against method=float_gates: the gate kind, nothing else)."""
    table = []
    for spec in pairs:
        a, b = spec.split(":")
        for row in rows:
            rs = row["runs"]
            if rs[0].row != a:
                continue
            others = [r for o in rows for r in o["runs"] if r.row == b and r.target == row["target"]
                      and r.epochs_label == row["epochs"] and r.network == row["network"]]
            for entry in paired(rs, others):
                table.append([f"{a} - {b}", num(row["target"]), row["epochs"], entry["setting"],
                              points(*entry["test"][:2], entry["test"][2]) if entry["test"][2] else DASH,
                              points(*entry["val"][:2], entry["val"][2]) if entry["val"][2] else DASH,
                              ", ".join(map(str, entry["seeds"]))])
    if not table:
        return ""
    return markdown_table(("difference", "target FLOPs", "epochs", "setting", "test", "val", "seeds"), table)


def gamma_windows(runs: list) -> str:
    """For fixed-gamma runs (gated, no FLOPs target) of each method and gate kind: every gamma
    with its FLOPs kept, dead layers and top-1, and the window of gammas that keep 20-90% of the
    FLOPs with no dead layer, with its width in decades. Empty when there are no such runs."""
    by = {}
    for r in runs:
        if r.fixed_gamma is not None and r.flops_kept is not None:
            by.setdefault((r.row, r.gates), []).append(r)
    if not by:
        return ""
    table, summary = [], []
    for (method, gates), rs in sorted(by.items()):
        rs = sorted(rs, key=lambda r: r.gamma)
        inside = []
        for r in rs:
            ok = WINDOW[0] <= r.flops_kept <= WINDOW[1] and not r.dead_layers
            inside += [r.gamma] if ok else []
            means = [m for m in (r.nonzero_mean or []) if m]
            table.append([method, gates, f"{r.gamma:g}", pct(r.flops_kept, digits=1), str(len(r.dead_layers)),
                          pct(r.final), f"{min(means):.2f}" if means else DASH, "yes" if ok else "no"])
        tried = ", ".join(format(r.gamma, "g") for r in rs)
        keep = "keep 20-90% of the FLOPs with no dead layer"
        if len(inside) == 1:
            summary.append(f"- {method}, {gates}: of the gammas tried, only {inside[0]:g} keeps 20-90% of the "
                           f"FLOPs with no dead layer: the window's width is not measured (tried: {tried})")
        elif inside and any(min(inside) < r.gamma < max(inside) and r.gamma not in inside for r in rs):
            summary.append(f"- {method}, {gates}: the gammas that {keep} ({', '.join(format(g, 'g') for g in inside)}) "
                           f"are not one interval: a gamma between them does not; no window (tried: {tried})")
        elif inside:
            lo, hi = min(inside), max(inside)
            summary.append(f"- {method}, {gates}: gammas {lo:g} to {hi:g} {keep}, a window of "
                           f"{math.log10(hi / lo):.2f} decades (tried: {tried})")
        else:
            summary.append(f"- {method}, {gates}: no gamma tried {keep.replace('keep', 'keeps', 1)} (tried: {tried})")
    columns = ("method", "gates", "gamma", "FLOPs kept %", "dead layers", "top-1 %", "smallest non-zero gate mean",
               "in window")
    return markdown_table(columns, table) + "\n\n" + "\n".join(summary)


def structures(runs: list) -> str:
    """Per gated training run: the widths it kept per layer (against the dense widths), its dead
    layers and the smallest per-layer mean of its kept non-zero gates. Empty without such runs."""
    rs = [r for r in runs if r.gates != DASH and r.kept_widths and not r.derived]
    if not rs:
        return ""
    blocks = any("block" in r.unit_kinds for r in rs)  # residual networks with block gates: depth selection
    rows = []
    for r in sorted(rs, key=lambda r: (r.row, r.gates, r.target or 0, r.seed or 0)):
        dense = r.reference_widths or [None] * len(r.kept_widths)
        means = [m for m in (r.nonzero_mean or []) if m]
        row = [os.path.basename(os.path.dirname(r.path)), r.row, r.gates, num(r.target), str(r.seed),
               " ".join(str(k) if d is None else f"{k}/{d}" for k, d in zip(r.kept_widths, dense)),
               str(len(r.dead_layers)), f"{min(means):.2f}" if means else DASH]
        if blocks:
            gone = [n for n, k, w in zip(r.layers, r.unit_kinds, r.kept_widths) if k == "block" and w == 0]
            kept = sum(k == "block" for k in r.unit_kinds) - len(gone)
            row.append(f"{len(gone)} ({', '.join(gone)}); {kept} kept" if gone else
                       (f"none; {kept} kept" if "block" in r.unit_kinds else DASH))  # DASH: no block gates
        rows.append(row)
    columns = ("run", "method", "gates", "target", "seed", "kept widths per layer (of the dense widths)",
               "dead layers", "smallest non-zero gate mean") + (("blocks removed",) if blocks else ())
    return markdown_table(columns, rows)


def run_numbers(r) -> dict:
    """What runs.json keeps of a run: the numbers behind the tables."""
    return {"path": r.path, "method": r.row, "run_method": r.method, "gates": r.gates, "target": r.target,
            "target_kind": r.target_kind, "seed": r.seed, "flops_kept": r.flops_kept, "params_kept": r.params_kept,
            **r.test, "final": r.final, "val": {**r.val, "final": r.final_val},
            "epochs": r.epochs_label if r.derived else r.epochs, "gamma": r.fixed_gamma, "gamma_end": r.gamma_end,
            "gamma_at_freeze": r.gamma_at_freeze, "dead_layers": r.dead_layers, "nonzero_mean": r.nonzero_mean,
            "kept_widths": r.kept_widths, "dense_widths": r.reference_widths, "derived": r.derived,
            "threads": r.threads, "device": r.device, "commit": r.commit, "dirty": r.dirty}


def body(runs: list, rows: list[dict], asked: tuple = ()) -> str:
    """The tables a docs page's section holds: the main table, what each row's target meant and
    what made its runs, the paired differences (and the contrasts `asked`, each `A:B`), and for
    fixed-gamma runs the gamma windows."""
    text = ("\"train compute\" is the training of the network delivered, in epochs of the dense network: "
            "epochs times the FLOPs of the network trained (a gated network computes every channel until "
            "its cut), plus each fine-tuning's epochs times the FLOPs of the network tuned.\n\n" + main_table(rows))
    text += ("\n\nWhat each row's FLOPs target meant, the gamma each budget run ended with (by seed; a "
             "budget that froze the architecture ends at 0, its gamma just before is given), and the "
             "thread counts and code commits its runs were made with (\"-\": a record from before "
             "these were kept).\n\n" + provenance_table(rows))
    pairs = pairings(rows, runs)
    text += ("\n\nPaired differences, in points of top-1 of the final network: each run minus the `uniform` "
             "run at the same FLOPs target and training epochs, and minus the `dense` run at the same "
             "training epochs (a cut's fine-tuning epochs not counted; a network trained for the compute of the "
             "dense network, `arch.epochs=flops` as Scratch-B, against the dense run of that compute: its epochs "
             "x its FLOPs kept), of the same seed (the same data "
             "order) and the same thread setting, as mean ± sample std of the differences over n pairs. "
             "Runs of different thread settings are never paired (the thread count alone moves a run by "
             "about a point); records without `env` are one unknown setting, paired only with each other.")
    text += "\n\n" + (paired_table(pairs) if pairs else "No row shares a seed and a thread setting with a "
                      "`uniform` or `dense` run at its epochs: no paired difference.")
    ambiguous = sorted({(p["row"]["method"], s) for p in pairs for ref in ("uniform", "dense")
                        for s in (p.get(ref) or {}).get("ambiguous", [])})
    if ambiguous:
        text += "\n\nNot paired (two reference runs of one seed and setting): " + \
            ", ".join(f"{m} seed {s}" for m, s in ambiguous)
    contrast = contrasts(rows, list(asked))
    if contrast:
        text += ("\n\nContrasts asked for (`--pair A:B`): each run of A minus the run of B of the same seed, FLOPs "
                 "target, epochs, network and setting, as mean ± sample std over the pairs.\n\n" + contrast)
    windows = gamma_windows(runs)
    if windows:
        text += ("\n\nFixed-gamma runs (no FLOPs budget): a gamma is in the window when it keeps 20% to "
                 "90% of the FLOPs with no dead layer. \"smallest non-zero gate mean\" is the smallest "
                 "per-layer mean of the kept non-zero gates at the end (float gates: a uniform shrink "
                 "drives it towards 0).\n\n" + windows)
    return text


def _earlier_comparison(path: str, names: set) -> bool:
    """A comparison folder written before the marker file existed (by gated_pruning.evidence)."""
    if not names <= set(FILES):
        return False
    try:
        with open(os.path.join(path, "results.md")) as f:
            head = f.read(400)
    except OSError:
        return False
    return head.startswith(f"# {os.path.basename(path)}\n\nWritten by `python -m gated_pruning.evidence ")


def write(name: str, dirs: list[str], out: str = os.path.join("docs", "results"), page: str | None = None,
          label: str = "method", pairs: tuple = ()) -> str:
    """Write OUT/NAME/ (and the page's section); returns the section's text. Nothing is written
    unless everything is: the folder is staged, the page rewritten by a rename at the end."""
    output.check_name(name)
    if page is not None:
        output.read_page(page, name)  # refuse before any work
    runs = load_all(dirs, label)
    rows = groups(runs)
    section = body(runs, rows, pairs)
    command = f"{TOOL} {name} {' '.join(dirs)}{' --label dir' if label == 'dir' else ''}" + \
        "".join(f" --pair {p}" for p in pairs)
    kept = structures(runs)
    md = (f"# {name}\n\nWritten by `{command}` from {len(runs)} run records. Top-1 on the test set unless "
          "marked val (the validation split, where the runs held one out), mean ± sample std over seeds; "
          "FLOPs and params kept against the dense network; \"final\" is the network the method delivers "
          "(fine-tuned if it fine-tunes, else as cut).\n\n" + section + "\n\n![accuracy vs FLOPs](accuracy_vs_flops.png)\n")
    if kept:
        md += ("\n## What the gates kept\n\nPer gated run: the channels kept in each conv layer (channel "
               "selection within layers shows as widths that differ from layer to layer, not all-or-nothing), "
               "layers left with no channel, and the smallest per-layer mean of the kept non-zero gates (a "
               "uniform shrink of float gates drives it towards 0; binary gates are 1).\n\n" + kept + "\n")
    output.publish(name, out, page, TOOL, section, {
        "results.md": lambda path: output.write_text(path, md),
        "runs.json": lambda path: output.write_text(path, json.dumps([run_numbers(r) for r in runs], indent=1)),
        "accuracy_vs_flops.png": lambda path: plots.plot_comparison(rows, path, f"{name}: final top-1 vs FLOPs kept"),
    }, _earlier_comparison)
    return section


def main(argv: list[str] | None = None) -> int:
    p = output.report_parser(TOOL, " ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--label", choices=("method", "dir"), default="method",
                   help="name rows by the run's method (default) or by its folder (one row per variant)")
    p.add_argument("--pair", action="append", default=[], type=_pair_spec, metavar="A:B",
                   help="also the paired difference A - B of two rows' methods by seed (repeatable)")
    return run_tool(_compare, p.parse_args(argv))


def _pair_spec(text: str) -> str:
    import argparse

    if text.count(":") != 1 or not all(text.split(":")):
        raise argparse.ArgumentTypeError(f"--pair {text!r} is not A:B (two methods, e.g. binary:float_gates)")
    return text


def _compare(a) -> int:
    print(write(a.name, a.dirs, a.out, a.page, a.label, tuple(a.pair)))
    print(f"\nwrote {os.path.join(a.out, a.name)}/results.md, accuracy_vs_flops.png, runs.json"
          + (f" and the section {a.name} of {a.page}" if a.page else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
