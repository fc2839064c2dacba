"""Reports over finished runs: one reader of run records, two views over it.

    python -m gated_pruning.reports.sweep DIR [--out OUT]          a row per run of a sweep, and plots
    python -m gated_pruning.reports.compare NAME DIR [DIR ...]     methods compared at matched FLOPs

- records.py  reads results.json files into `Run`s and decides every label (method, gate kind,
              FLOPs target and its meaning, gamma at the end, thread setting, commit)
- seeds.py    mean ± sample std over seeds, and paired differences by seed under one thread setting
- tables.py   the markdown table writer and the number formatters
- plots.py    every figure, bounded in size however many runs it shows
- output.py   where reports write: staged folders they own, safe names, a docs page's section
- sweep.py    the sweep report (a view)
- compare.py  the matched-FLOPs comparison (a view)
"""
