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


HALF = '''
from gated_pruning.gates import ThresholdBinarizer


class Half(ThresholdBinarizer):
    """0/1 gates at a threshold of one half, straight-through: a researcher's own gate kind."""

    def __init__(self, estimator="identity"):
        super().__init__(0.5, estimator)
'''
HALF_KINDS = '''
from gated_pruning.kinds import Binarizer

KINDS = [Binarizer("halfgates.Half", "half", "half", "binary (half)", binary=True, estimators=("identity", "clipped"))]
'''


def half_gates(tmp_path, registered=True):
    """A package outside the project with a gate kind: its class, its declaration (named by an
    installed distribution's `gated_pruning.kinds` entry point) and its yaml in a config dir."""
    site = tmp_path / "site"
    (site / "halfgates").mkdir(parents=True)
    (site / "halfgates" / "__init__.py").write_text(HALF)
    (site / "halfgates" / "kinds.py").write_text(HALF_KINDS)
    if registered:
        dist = site / "halfgates-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: halfgates\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text("[gated_pruning.kinds]\nhalf = halfgates.kinds\n")
    conf = tmp_path / "conf" / "binarizer"
    conf.mkdir(parents=True)
    (conf / "half.yaml").write_text("_target_: halfgates.Half\nestimator: clipped\n")
    return {"PYTHONPATH": str(site)}, f"--config-dir={tmp_path / 'conf'}"


def test_a_gate_kind_from_another_package_is_refused_until_it_is_declared(tmp_path):
    env, conf = half_gates(tmp_path, registered=False)
    r = run_py(conf, "experiment=smoke", "binarizer=half", f"hydra.run.dir={tmp_path / 'run'}", env=env)
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and "binarizer._target_='halfgates.Half' is not one of" in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_gate_kind_from_another_package_trains_prunes_and_is_labelled_by_its_declaration(tmp_path):
    """Only the package's class, declaration and yaml: no file of the project touched."""
    env, conf = half_gates(tmp_path)
    r = run_py(conf, "experiment=smoke", "binarizer=half", "binarizer.estimator=relaxed",
               f"hydra.run.dir={tmp_path / 'no'}", env=env)
    line = one_error_line(r.stderr)  # its declared estimators are the rule
    assert r.returncode == 2 and "binarizer.estimator='relaxed' is not one of identity, clipped" in line, line
    run = tmp_path / "run"
    r = run_py(conf, "experiment=smoke", "binarizer=half", "gamma=0.05", f"hydra.run.dir={run}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.load(open(run / "results.json"))
    assert res["config"]["binarizer"] == {"_target_": "halfgates.Half", "estimator": "clipped"}
    assert res["prune"]["compact"]["widths"] and res["final"]["test_top1"] is not None
    label = subprocess.run([sys.executable, "-c", "import sys; from gated_pruning.reports import records; "
                            "r = records.load(sys.argv[1])[0]; print(r.variant, '|', r.gates)", str(run)],
                           cwd=ROOT, env=dict(os.environ, **env), capture_output=True, text=True, timeout=300)
    assert label.stdout.strip() == "apg-half | binary (half)", label.stdout + label.stderr
