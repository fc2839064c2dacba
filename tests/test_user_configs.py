"""A researcher's own configs and networks: `--config-dir DIR` adds options to every config group
(checked as the project's own are), a run started with it resumes with it, and
`model=custom model.net._target_=...` gates any CNN of the user's own module."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time



import pytest

from conftest import CONF, ROOT, one_error_line, run_py


def user_dir(tmp_path):
    """DIR/model/myvgg.yaml, a plain copy of the project's VGG-11."""
    d = tmp_path / "myconf"
    (d / "model").mkdir(parents=True)
    shutil.copy(os.path.join(CONF, "model", "vgg11.yaml"), d / "model" / "myvgg.yaml")
    return d


@pytest.mark.slow
def test_a_config_dir_adds_options_to_every_group_and_resumes_with_them(tmp_path):
    d = user_dir(tmp_path)
    r = run_py(f"--config-dir={d}", "experiment=smoke", "model=myvg", f"hydra.run.dir={tmp_path / 'no'}")
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and "model=myvg is not an option" in line and "myvgg" in line
    run = tmp_path / "run"
    args = [f"--config-dir={d}", "model=myvgg", "experiment=smoke", "dataset.train_size=4096",
            "trainer.checkpoint_every_steps=5"]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "run.py"), *args, f"hydra.run.dir={run}"],
                            cwd=tmp_path, env=dict(os.environ, WANDB_MODE="disabled"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t = time.time()
    while not (run / "checkpoint.pt").exists():
        assert proc.poll() is None and time.time() - t < 600, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    line = one_error_line(err)
    assert proc.returncode == 143 and f"--config-dir={d}" in line, err
    pasted = line.split("continue with: ", 1)[1]
    r = subprocess.run(["bash", "-c", 'python() { "$PY" "$@"; }; ' + pasted], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, PY=sys.executable, WANDB_MODE="disabled"))
    assert r.returncode == 0, r.stderr[-2000:]
    (res,) = [json.load(open(os.path.join(p, f))) for p, _, fs in os.walk(tmp_path / "outputs") for f in fs
              if f == "results.json"]
    assert res["config"]["model"]["depth"] == 11 and res["choices"]["model"] == "myvgg"


TESTS = os.path.dirname(os.path.abspath(__file__))  # holds user_nets.py, a researcher's own module


@pytest.mark.slow
def test_a_users_own_network_meets_its_flops_target_and_its_export_is_scored_alone(tmp_path):
    run = tmp_path / "run"
    args = ["experiment=smoke", "model=custom", "model.net._target_=user_nets.SmallNet", "+model.net.channels=32",
            "model.width=1", "method=binary", "model.gate_position=bn", "target_flops=0.5"]
    r = run_py(*args, f"hydra.run.dir={run}", env={"PYTHONPATH": TESTS})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.load(open(run / "results.json"))
    assert abs(res["cost"]["flops_kept"] - 0.5) <= 0.03 and not res["target"]["missed"]
    # three channel groups: the pair's inner channels, the residual stream (stem.0 and pair.1, coupled
    # by the add, named by the conv Torch-Pruning roots it at) and the strided conv
    assert res["prune"]["units"] == ["pair.0.0", "pair.1", "down.0"]
    r = subprocess.run([sys.executable, "-m", "gated_pruning.evaluate", str(run)], cwd=ROOT, capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=""))  # torch alone: no user module needed
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["top1"] == res["prune"]["test"]["compact"]["top1"]
    # the same network from a --config-dir file naming it
    d = tmp_path / "conf" / "model"
    d.mkdir(parents=True)
    (d / "mine.yaml").write_text("defaults:\n  - custom\n  - _self_\nnet:\n  _target_: user_nets.SmallNet\n"
                                 "  channels: 16\nwidth: 1.0\n")
    r = run_py(f"--config-dir={tmp_path / 'conf'}", "experiment=smoke", "model=mine", "trainer.epochs=1",
               f"hydra.run.dir={tmp_path / 'mine'}", env={"PYTHONPATH": TESTS})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.load(open(tmp_path / "mine" / "results.json"))["config"]["model"]["net"]["channels"] == 16


@pytest.mark.parametrize("target,why", [
    ("user_nets.Concat", "the channels of pair.1 are concatenated"),
    ("user_nets.NoNorm", "the output channels of down.0 are written by no batch norm"),
    ("user_nets.ConvHead", "no nn.Linear classifier"),
    ("user_nets.Nowhere", "model.net._target_=user_nets.Nowhere: cannot build it"),
    ("user_nets.SmallNet +model.net.chanels=3", "unexpected keyword argument 'chanels'"),
    ("user_nets.SmallNet +model.net.num_classes=7", "it outputs (1, 7) for one image, the data set has 10 classes")])
def test_what_cannot_be_gated_is_refused_in_one_line_before_any_work(target, why, tmp_path):
    target, *extra = target.split()
    r = run_py("experiment=smoke", "model=custom", f"model.net._target_={target}", *extra,
               f"hydra.run.dir={tmp_path / 'run'}", env={"PYTHONPATH": TESTS}, timeout=120)
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and why in line, line
    assert not (tmp_path / "run").exists()
