"""The sweep report: a row per run of a sweep, and plots of what its gates did.

    python -m gated_pruning.reports.sweep multirun/2025-01-01/12-00-00 [--out OUTDIR]

Writes OUTDIR/report.md (default OUTDIR: DIR/report) with one row per run, and
`accuracy_vs_flops.png`, `zero_gate_heatmap.png`, `kept_widths.png`, `gate_trajectories.png`;
the table also goes to stdout. Runs written before pruning existed (no "prune" section) get "-" in
the pruning columns and are left out of the two pruning plots; their per-layer sparsity comes
from the final gate counts instead. An existing OUTDIR is replaced only when it is this report's
own earlier output.
"""
from __future__ import annotations

import math
import os
import sys

from gated_pruning.toolkit import ArgumentParser, readable_dir, run_tool
from gated_pruning.reports import plots
from gated_pruning.reports.output import staged_folder, write_text
from gated_pruning.reports.records import load
from gated_pruning.reports.tables import DASH, markdown_table, num, pct

TOOL = "python -m gated_pruning.reports.sweep"
PLOTS = ("accuracy_vs_flops.png", "zero_gate_heatmap.png", "kept_widths.png", "gate_trajectories.png")
COLUMNS = ("run", "variant", "gamma", "top-1 %", "pruned top-1 %", "FLOPs kept %", "params kept %",
           "speedup", "sparsity per layer")


def load_runs(root: str) -> list:
    """The runs below `root`, sorted by variant, gamma, name."""
    runs = load(root)
    runs.sort(key=lambda r: (r.variant, math.inf if r.gamma is None else r.gamma, r.name))
    return runs


def table_rows(runs: list) -> tuple[list[str], list[list[str]]]:
    """Columns and rows; a fine-tuned and a val column only when some run has them."""
    columns = list(COLUMNS)
    tuned = lambda r: r.test["finetuned"] if r.pruned else None  # noqa: E731
    with_ft = any(tuned(r) is not None for r in runs)
    with_val = any(r.val["trained"] is not None for r in runs)
    if with_ft:
        columns.insert(5, "fine-tuned top-1 %")
    if with_val:
        columns.insert(4, "val top-1 %")
    rows = []
    for r in runs:
        row = [r.name, r.variant, num(r.gamma), pct(r.test["trained"]), pct(r.test["cut"] if r.pruned else None),
               pct(r.pruned_flops_kept, digits=1), pct(r.pruned_params_kept, digits=1),
               DASH if r.speedup is None else f"x{r.speedup:.2f}",
               DASH if r.sparsity is None else " ".join(f"{s:.2f}" for s in r.sparsity)]
        if with_ft:
            row.insert(5, pct(tuned(r)))
        if with_val:
            row.insert(4, pct(r.val["trained"]))
        rows.append(row)
    return columns, rows


def markdown_report(runs: list, root: str) -> str:
    parts = [f"# Report: {os.path.abspath(root)}", "",
             f"{len(runs)} runs. Top-1 on the test set (val: the validation split, where the run held "
             "one out); pruned top-1 is the compact network after removing the zero-gate channels "
             "(before any fine-tuning). Sparsity per layer: the fraction of each conv layer's channels "
             "removed (from the final gate counts for runs without a prune section).", "",
             markdown_table(*table_rows(runs)), ""]
    notes = [f"- `{r.name}`: no prune section (pruning columns \"-\", left out of the pruning plots)"
             for r in runs if not r.pruned]
    notes += [f"- `{r.name}`: every gate of {', '.join(r.dead_layers)} is zero (the network "
              "outputs a constant)" for r in runs if r.dead_layers]
    if notes:
        parts += ["Notes:", "", *notes, ""]
    settings = len(plots.setting_groups(runs))
    if settings < len(runs) or settings > plots.MAX_PANELS:
        parts += [f"The plots draw the runs of one setting (variant and gamma: {settings} settings) as their "
                  f"mean; the per-run panels show at most {plots.MAX_PANELS} settings, evenly spaced in "
                  "the table's order.", ""]
    parts += ["## Accuracy vs FLOPs", "", "![accuracy vs FLOPs](accuracy_vs_flops.png)", "",
              "## Zero gates during training", "", "![zero gates](zero_gate_heatmap.png)", "",
              "## Kept widths", "", "![kept widths](kept_widths.png)", "",
              "## Gate trajectories", "",
              "Per layer, the median latent gate over training with its 10-90% band (binary gates: the "
              "float value before binarization). Lines that fall together are the uniform shrink; "
              "bands that split within a layer are channel selection.", "",
              "![gate trajectories](gate_trajectories.png)", ""]
    return "\n".join(parts)


def _earlier_report(path: str, names: set) -> bool:
    """A report folder written before the marker file existed: only its own files."""
    if not names <= {"report.md", *PLOTS}:
        return False
    try:
        with open(os.path.join(path, "report.md")) as f:
            return f.read(10) == "# Report: "
    except OSError:
        return False


def write_report(root: str, out: str | None = None) -> tuple[str, list]:
    """Write report.md and the plots, all or none; returns (report.md path, runs)."""
    readable_dir(root)  # before the output's folder is made next to it
    out = out or os.path.join(root, "report")
    with staged_folder(out, TOOL, _earlier_report) as tmp:  # refuses a folder it did not write, first
        runs = load_runs(root)
        plots.plot_accuracy_vs_flops(runs, os.path.join(tmp, PLOTS[0]))
        plots.plot_zero_gate_heatmap(runs, os.path.join(tmp, PLOTS[1]))
        plots.plot_kept_widths(runs, os.path.join(tmp, PLOTS[2]))
        plots.plot_gate_trajectories(runs, os.path.join(tmp, PLOTS[3]))
        write_text(os.path.join(tmp, "report.md"), markdown_report(runs, root))
    return os.path.join(out, "report.md"), runs


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=TOOL, description=__doc__.split("\n")[0])
    parser.add_argument("dir", help="a Hydra multirun folder, or any folder with results.json files below it")
    parser.add_argument("--out", default=None, help="output folder (default: DIR/report)")
    return run_tool(_report, parser.parse_args(argv))


def _report(args) -> int:
    md, runs = write_report(args.dir, args.out)
    print(markdown_table(*table_rows(runs)))
    print(f"\nwrote {md} and {', '.join(PLOTS)} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
