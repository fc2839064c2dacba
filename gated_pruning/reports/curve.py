"""Accuracy against training length: how far from converged a recipe is, from the run records.

    python -m gated_pruning.reports.curve NAME DIR [DIR ...] [--out docs/results] [--page docs/results.md]

Reads every results.json below the DIRs and writes OUT/NAME/: `results.md` (a row per run: its
recipe, epochs, seed, the final val top-1 (the split choices are made on) and test top-1; then,
per recipe and seed, what doubling the epochs gained on val) and `curve.png` (val top-1 after every
epoch of every run, by recipe). With `--page`, the tables also replace that page's section between
`<!-- results:NAME -->` and `<!-- /results:NAME -->` (checked first, written atomically).
"""
from __future__ import annotations

import os
import sys

from gated_pruning.reports import output, plots
from gated_pruning.reports.records import load
from gated_pruning.reports.tables import DASH, markdown_table, pct, points
from gated_pruning.toolkit import run_tool

TOOL = "python -m gated_pruning.reports.curve"


def rows(runs: list) -> list[list[str]]:
    """A row per run, by recipe, epochs, seed."""
    order = sorted(runs, key=lambda r: (r.recipe, r.epochs or 0, r.seed if r.seed is not None else -1, r.name))
    return [[r.name, r.recipe, DASH if r.epochs is None else str(r.epochs), DASH if r.seed is None else str(r.seed),
             pct(r.val["trained"]), pct(r.test["trained"]), DASH if r.threads is None else str(r.threads)]
            for r in order]


def doublings(runs: list) -> list[list[str]]:
    """Per recipe and seed, each epochs E whose 2E also ran: val top-1 at E, at 2E, and the gain."""
    by = {}
    for r in runs:
        if r.epochs is not None and r.val["trained"] is not None:
            by.setdefault((r.recipe, r.seed), {})[r.epochs] = r.val["trained"]
    out = []
    for (recipe, seed), at in sorted(by.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1])):
        for e in sorted(at):
            if 2 * e in at:
                out.append([recipe, DASH if seed is None else str(seed), f"{e} -> {2 * e}", pct(at[e]),
                            pct(at[2 * e]), points(at[2 * e] - at[e])])
    return out


def body(runs: list) -> str:
    text = markdown_table(("run", "recipe", "epochs", "seed", "val top-1 %", "test top-1 %", "threads"), rows(runs))
    gains = doublings(runs)
    if gains:
        text += ("\n\nWhat doubling the epochs gained on val (same recipe and seed):\n\n"
                 + markdown_table(("recipe", "seed", "epochs", "val top-1 % before", "val top-1 % after",
                                   "gain, points"), gains))
    return text


def write(name: str, dirs: list[str], out: str = os.path.join("docs", "results"), page: str | None = None) -> str:
    """Write OUT/NAME/ (and the page's section); returns the section's text."""
    output.check_name(name)
    if page is not None:
        output.read_page(page, name)  # refuse before any work
    runs = [r for d in dirs for r in load(d)]
    section = body(runs)
    md = (f"# {name}\n\nWritten by `{TOOL} {name} {' '.join(dirs)}` from {len(runs)} run records: top-1 of the "
          "trained network on the validation split held out of the training set (what choices are made on) and "
          "on the test set, one row per run.\n\n" + section + "\n\n![val top-1 per epoch](curve.png)\n")
    output.publish(name, out, page, TOOL, section, {
        "results.md": lambda path: output.write_text(path, md),
        "curve.png": lambda path: plots.plot_curves(runs, path, f"{name}: val top-1 after every epoch"),
    })
    return section


def main(argv: list[str] | None = None) -> int:
    p = output.report_parser(TOOL, " ".join(__doc__.split("\n\n")[0].split()))
    return run_tool(_curve, p.parse_args(argv))


def _curve(a) -> int:
    print(write(a.name, a.dirs, a.out, a.page))
    print(f"\nwrote {os.path.join(a.out, a.name)}/results.md and curve.png"
          + (f" and the section {a.name} of {a.page}" if a.page else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
