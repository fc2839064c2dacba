"""Deployment: `compact.onnx` beside `compact.pt2`, the same network with a dynamic batch size, run by
onnxruntime to the same outputs; the record holds both networks' onnxruntime latency."""
import json

import numpy as np
import pytest
import torch

from conftest import run_py


@pytest.mark.slow
def test_compact_onnx_computes_what_compact_pt2_computes_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    run = tmp_path / "run"
    r = run_py("experiment=smoke", "prune.onnx=true", "target_flops=0.5", f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.load(open(run / "results.json"))
    pr = res["prune"]
    assert pr["onnx"] == "compact.onnx" and pr["kept"]["flops"] < 1.0  # a network that was cut
    assert pr["speedup_onnxruntime"] == pytest.approx(
        pr["dense"]["latency_ms_onnxruntime"] / pr["compact"]["latency_ms_onnxruntime"])
    program = torch.export.load(str(run / "compact.pt2")).module()
    session = ort.InferenceSession(str(run / "compact.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7):  # the batch dimension is dynamic
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        expected = program(x).detach().numpy()
        got = session.run(None, {"x": x.numpy()})[0]
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_onnx_asked_for_without_its_packages_is_one_warning_and_no_file(tmp_path):
    # onnxscript made unimportable: the run goes on, says why there is no compact.onnx
    run = tmp_path / "run"
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "onnxscript.py").write_text("raise ImportError('hidden by the test')\n")
    (hide / "sitecustomize.py").write_text(
        "import importlib.util, sys\n_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a, **k: None if n == 'onnxscript' else _find(n, *a, **k)\n")
    r = run_py("experiment=smoke", "trainer.epochs=1", "prune.onnx=true", f"hydra.run.dir={run}",
               env={"PYTHONPATH": str(hide)})
    assert r.returncode == 0, r.stderr[-2000:]
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert warnings == ["warning: prune.onnx=true but onnxscript is not installed: no compact.onnx "
                        "(pip install -e '.[deploy]', or prune.onnx=false)"]
    assert not (run / "compact.onnx").exists() and (run / "compact.pt2").exists()
    assert json.load(open(run / "results.json"))["prune"]["onnx"] is None
