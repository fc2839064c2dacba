"""Transitional: the tools' shared helpers under their old module name, for
`gated_pruning/report.py`, which is being rewritten on its own branch and still imports them from
here. The helpers live in `toolkit.py`, the run launcher in `launch.py` and `preflight.py`;
delete this file once report.py imports `gated_pruning.toolkit`."""
from gated_pruning.toolkit import ArgumentParser, readable_dir, run_tool, staged

__all__ = ["ArgumentParser", "readable_dir", "run_tool", "staged"]
