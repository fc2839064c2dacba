"""The epochs report (python -m gated_pruning.reports.curve): a row per run with its recipe, and
what doubling the epochs gained on val, computed by hand on stub records."""
import json

import pytest

from gated_pruning.reports import curve
from gated_pruning.reports.records import ReportError

from stub_records import record


def write_runs(root, specs):
    for name, epochs, seed, val, lr in specs:
        res = record(method="dense", seed=seed, test=val + 0.01, val=val, epochs=epochs, kind=None, target=None)
        res["config"]["optimizer"]["lr"] = lr
        res["config"]["trainer"]["amp"] = True
        res["curve"] = [{"epoch": e + 1, "val_top1": val * (e + 1) / epochs} for e in range(epochs)]
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_text(json.dumps(res))


def test_doubling_gains_by_hand_and_the_page_section(tmp_path):
    write_runs(tmp_path / "runs", [("e4", 4, 0, 0.30, 0.1), ("e8", 8, 0, 0.40, 0.1), ("e16", 16, 0, 0.47, 0.1),
                                   ("o8", 8, 0, 0.35, 0.05), ("s1e8", 8, 1, 0.41, 0.1)])
    page = tmp_path / "results.md"
    page.write_text("intro\n<!-- results:epochs -->\nold\n<!-- /results:epochs -->\nend\n")
    text = curve.write("epochs", [str(tmp_path / "runs")], str(tmp_path / "out"), str(page))
    gains = [ln.split("|")[1:-1] for ln in text.split("gained on val")[1].splitlines() if ln.startswith("| lr")]
    assert [[c.strip() for c in g] for g in gains] == [
        ["lr 0.1, bf16", "0", "4 -> 8", "30.00", "40.00", "+10.00"],
        ["lr 0.1, bf16", "0", "8 -> 16", "40.00", "47.00", "+7.00"]]  # other lr and seed 1: no pair
    assert "| o8 | lr 0.05, bf16 | 8 | 0 | 35.00 | 36.00 | 1 |" in text
    assert page.read_text() == f"intro\n<!-- results:epochs -->\n{text}\n<!-- /results:epochs -->\nend\n"
    assert (tmp_path / "out" / "epochs" / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_a_page_without_the_section_is_refused_before_anything_is_written(tmp_path):
    write_runs(tmp_path / "runs", [("e4", 4, 0, 0.30, 0.1)])
    page = tmp_path / "results.md"
    page.write_text("no markers\n")
    with pytest.raises(ReportError, match="no section"):
        curve.write("epochs", [str(tmp_path / "runs")], str(tmp_path / "out"), str(page))
    assert not (tmp_path / "out").exists() and page.read_text() == "no markers\n"
