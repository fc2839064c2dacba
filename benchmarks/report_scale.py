"""The sweep report over many runs: how long it takes and how large its plots are.

    python benchmarks/report_scale.py [--runs 200] [--keep DIR]

Writes `--runs` stub run records (tests/stub_records.py: a gamma sweep of 2 gate optimizers x 2
gate kinds x 10 gammas, seeds for the rest; 13 layers, 35 history entries each, like a CPU-preset
run), times `python -m gated_pruning.reports.sweep` over them in a fresh interpreter, and prints
the size of each plot in pixels and bytes. Measured on the 2-core machine, 200 runs: 43 s and
plots up to 1,800 x 32,714 pixels (5.3 MB) before the reports package, 4.7 s and at most
1,800 x 1,680 pixels after.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import stub_records  # noqa: E402 - from tests/, where the report tests use it too


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--keep", help="write the records and the report here (default: a temporary folder)")
    a = p.parse_args(argv)
    from PIL import Image

    root = a.keep or tempfile.mkdtemp(prefix="report_scale-")
    stub_records.sweep(os.path.join(root, "runs"), a.runs)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gated_pruning.reports.sweep", os.path.join(root, "runs"), "--out",
                    os.path.join(root, "report")], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"{a.runs} runs: {time.perf_counter() - start:.1f} s")
    for name in sorted(os.listdir(os.path.join(root, "report"))):
        if name.endswith(".png"):
            path = os.path.join(root, "report", name)
            w, h = Image.open(path).size
            print(f"  {name}: {w} x {h} pixels, {os.path.getsize(path) / 1e6:.2f} MB")
    if not a.keep:
        import shutil

        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
