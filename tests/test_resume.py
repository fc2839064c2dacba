"""Reliability: a killed or preempted run resumes bit-identically; divergence, corrupt and
mismatched checkpoints and unusable output directories get one line and lose nothing."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, make_cfg, one_error_line, run_py, snapshot

# 32 steps an epoch, a checkpoint every 5 steps: every step-checkpoint is mid-epoch
ARGS = ["experiment=smoke", "dataset.train_size=2048", "trainer.epochs=2", "trainer.log_every=4",
        "trainer.checkpoint_every_steps=5", "prune.latency_reps=1", "prune.latency_warmup=0"]


def comparable(run_dir):
    res = json.load(open(os.path.join(run_dir, "results.json")))
    model = torch.load(os.path.join(run_dir, "model.pt"), weights_only=True)["model"]
    pr = res["prune"]
    return {"metrics": res["metrics"], "gates": res["gates"], "widths": pr["compact"]["widths"],
            "pruned_test": pr["test"]}, model


def assert_identical(a_dir, b_dir):
    (a, ma), (b, mb) = comparable(a_dir), comparable(b_dir)
    assert a == b
    assert ma.keys() == mb.keys()
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k


def start(args, run_dir):
    env = dict(os.environ, WANDB_MODE="disabled")
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "run.py"), *args, f"hydra.run.dir={run_dir}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, proc, timeout=3000):
    t = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t < timeout
        time.sleep(0.002)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    runs = {}

    def get(extra):
        key = tuple(extra)
        if key not in runs:
            d = tmp_path_factory.mktemp("full")
            r = run_py(*ARGS, *extra, f"hydra.run.dir={d}")
            assert r.returncode == 0, r.stderr
            runs[key] = d
        return runs[key]
    return get


@pytest.mark.slow
# (the sgd case: a budget with reopen keeps each float gate's last-open step, through the checkpoint)
@pytest.mark.parametrize("extra", [["binarizer=stochastic"],
                                   ["optimizer=sgd", "optimizer.gates.clamp=true", "model.gate_position=relu",
                                    "target_flops=0.5", "budget.reopen=true"],
                                   ["trainer.compile=true", "method=binary", "target_flops=0.5"],
                                   ["trainer.amp=false", "trainer.channels_last=true"]])
def test_sigkill_mid_epoch_then_resume_is_bit_identical(extra, uninterrupted, tmp_path):
    killed = tmp_path / "killed"
    proc = start(ARGS + extra, killed)
    wait_for(killed / "checkpoint.pt", proc)
    proc.kill()
    proc.wait()
    state = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert 0 < state["batch"] < 32  # killed mid-epoch
    resumed = tmp_path / "resumed"
    r = run_py(*ARGS, *extra, f"resume={killed}", f"hydra.run.dir={resumed}")
    assert r.returncode == 0, r.stderr
    assert_identical(uninterrupted(extra), resumed)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_is_bit_identical(uninterrupted, tmp_path):
    extra = ["binarizer=threshold"]
    stopped = tmp_path / "stopped"
    proc = start(ARGS + extra, stopped)
    wait_for(stopped / "checkpoint.pt", proc)  # training has started
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=3000)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM; checkpoint saved to" in err and "resume=" in err
    assert "error: stopped by SIGTERM; checkpoint saved to" in (stopped / "run.log").read_text()
    state = torch.load(stopped / "checkpoint.pt", weights_only=True)
    assert state["step"] > 0
    resumed = tmp_path / "resumed"
    r = run_py(*ARGS, *extra, f"resume={stopped / 'checkpoint.pt'}", f"hydra.run.dir={resumed}")
    assert r.returncode == 0, r.stderr
    assert_identical(uninterrupted(extra), resumed)


def no_temporary_files(d):
    return not [os.path.join(p, f) for p, ds, fs in os.walk(d) for f in fs + ds if ".tmp" in f]


@pytest.mark.slow
def test_ctrl_c_finishes_the_step_and_saves_and_a_signal_while_pruning_keeps_a_resume_point(uninterrupted, tmp_path):
    extra = ["binarizer=threshold"]
    # 1. Ctrl-C (SIGINT) mid-training: the step is finished, a checkpoint saved, the command printed
    stopped = tmp_path / "stopped"
    proc = start(ARGS + extra, stopped)
    wait_for(stopped / "checkpoint.pt", proc)
    before = {f: b for f, b in snapshot(stopped).items() if f != "checkpoint.pt"}
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=3000)
    line = one_error_line(err)
    assert proc.returncode == 130 and f"stopped by SIGINT; checkpoint saved to {stopped}/checkpoint.pt" in line
    command = line.split("continue with: ")[1].split()
    assert command[:2] == ["python", "run.py"] and command[-1] == f"resume={stopped}/checkpoint.pt"
    assert torch.load(stopped / "checkpoint.pt", weights_only=True)["step"] > 0
    after = snapshot(stopped)
    log = before.pop("run.log")  # the run's printed lines: only added to, the stop's among them
    assert after["run.log"].startswith(log) and b"error: stopped by SIGINT; checkpoint saved" in after["run.log"]
    assert {f: after[f] for f in before} == before and no_temporary_files(stopped)
    # 2. resumed into its own directory, then stopped (SIGTERM) while it prunes: nothing half
    #    written, the resume point kept, the first run's files untouched
    resumed = tmp_path / "resumed"
    proc = start(ARGS + extra + [f"resume={stopped}", "prune.latency_reps=300"], resumed)
    wait_for(resumed / "model.pt", proc)  # training is over, pruning has begun
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=3000)
    line = one_error_line(err)
    assert proc.returncode == 143 and "stopped by SIGTERM at once" in line, err
    assert line.endswith(f"resume={resumed}/checkpoint.pt")
    assert not (resumed / "results.json").exists() and not (resumed / "compact.pt2").exists()
    assert no_temporary_files(resumed) and snapshot(stopped) == after
    # 3. resume= finishes the run: what an uninterrupted run of the same seed gives, bit for bit
    final = tmp_path / "final"
    r = run_py(*ARGS, *extra, f"resume={resumed}", f"hydra.run.dir={final}")
    assert r.returncode == 0, r.stderr
    assert_identical(uninterrupted(extra), final)


# run.py, with Ctrl-C pressed twice during step 2 from inside the process: the first press is heard
# (the handler runs as soon as os.kill returns), then the second comes while the step still runs.
# Sent from outside, the second press races the end of the step: Python runs a signal handler only
# between bytecodes, so a first press that arrives during loss.backward(), one long C call, is heard
# only when the backward pass is over, and the second then often comes after the run has stopped
# (CI saw that twice). The single press from outside is tested above.
TWO_PRESSES = """
import os, runpy, signal, sys
from gated_pruning import train
step = train.Trainer._train_step
def pressed_twice(self, x, y):
    if self.step == 1:
        os.kill(os.getpid(), signal.SIGINT)
        assert self.stop.signum == signal.SIGINT, "the first Ctrl-C was not heard"
        os.kill(os.getpid(), signal.SIGINT)
    return step(self, x, y)
train.Trainer._train_step = pressed_twice
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once(tmp_path):
    # 8 steps per epoch, a checkpoint after step 1: the second Ctrl-C, in step 2, keeps it
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", TWO_PRESSES, os.path.join(ROOT, "run.py"), "experiment=smoke",
                        "dataset.train_size=1024", "dataset.batch_size=128", "trainer.checkpoint_every_steps=1",
                        f"hydra.run.dir={run}"], cwd=ROOT, env=dict(os.environ, WANDB_MODE="disabled"),
                       capture_output=True, text=True, timeout=3000)
    assert "warning: SIGINT: finishing this step, then saving a checkpoint (Ctrl-C again stops at once)" in r.stderr
    line = one_error_line(r.stderr)
    assert r.returncode == 130 and "stopped by SIGINT at once" in line and f"resume={run}/checkpoint.pt" in line
    assert no_temporary_files(run)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 1  # step 2 never finished


def test_the_training_handler_stops_after_the_step_on_the_first_signal_and_at_once_on_the_second():
    from gated_pruning.errors import Interrupted, StopRequest

    t = StopRequest()  # the training loop's signal handling
    previous = signal.getsignal(signal.SIGINT)
    with t.handled():
        os.kill(os.getpid(), signal.SIGTERM)
        assert t.signum == signal.SIGTERM and t.name == "SIGTERM"
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is previous


def last_line(r):
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


@pytest.mark.slow
def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    r = run_py("experiment=smoke", "optimizer.lr=1e4", "optimizer.schedule=constant",
               "trainer.checkpoint_every_steps=1", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2
    line = last_line(r)
    assert line.startswith("error: ") and "NaN or infinite" in line and "step" in line, r.stderr
    assert not (tmp_path / "results.json").exists()
    if (tmp_path / "checkpoint.pt").exists():
        state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.fixture(scope="module")
def finished(finished_run):
    return finished_run


def refused(capsys, *argv):
    """(exit status, the one error line) of run.py's checks (in this process: the resume path
    through run.py itself is the SIGKILL and SIGTERM tests above)."""
    from gated_pruning import launch

    with pytest.raises(SystemExit) as e:
        launch.prepare(list(argv))
    return e.value.code, one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.write_bytes(b"garbage" * 10), "corrupt or unreadable checkpoint"),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "corrupt or unreadable checkpoint"),
    (lambda p: torch.save({"payload": subprocess.Popen}, p), "corrupt or unreadable checkpoint"),
    (lambda p: torch.save({"format": 99}, p), "not a gated_pruning checkpoint"),
])
def test_corrupt_checkpoint_is_refused(make, needle, finished, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    p = bad / "checkpoint.pt"
    p.write_bytes((finished / "checkpoint.pt").read_bytes())
    make(p)
    before, earlier = snapshot(bad), snapshot(finished)
    code, line = refused(capsys, "experiment=smoke", "trainer.epochs=1", f"resume={bad}", f"hydra.run.dir={tmp_path / 'new'}")
    assert code == 2 and line.startswith("error: resume=") and needle in line
    assert snapshot(bad) == before and snapshot(finished) == earlier and not (tmp_path / "new").exists()


@pytest.mark.parametrize("override,needle", [
    ("model.width=0.25", "model.width: 0.125 in checkpoint vs 0.25 now"),
    ("model.depth=13", "model.depth: 11 in checkpoint vs 13 now"),
    ("binarizer=threshold", "binarizer._target_"),
])
def test_checkpoint_of_another_config_is_refused(override, needle, finished, tmp_path, capsys):
    earlier = snapshot(finished)
    code, line = refused(capsys, "experiment=smoke", "trainer.epochs=1", override, f"resume={finished}",
                         f"hydra.run.dir={tmp_path / 'new'}")
    assert code == 2 and "different config" in line and needle in line
    assert snapshot(finished) == earlier


def test_a_layer_losing_every_gate_warns_and_is_recorded(tmp_path, capsys):
    from gated_pruning import experiment

    res = experiment.run(make_cfg("experiment=smoke", "gamma=0.5", "trainer.epochs=2"), str(tmp_path))
    assert "warning: every gate of conv" in capsys.readouterr().err
    assert res == json.load(open(tmp_path / "results.json"))
    assert res["gates"]["dead_layers"] and res["prune"]["dead_layers"]
    assert all(w >= 1 for w in res["prune"]["compact"]["widths"])


def test_sparse_evaluation_and_checkpoints_keep_the_last_epoch_and_skip_host_copies(tmp_path, monkeypatch):
    from gated_pruning import experiment
    from gated_pruning.gatelog import GateLog
    from gated_pruning.train import Trainer

    saved, copied = [], []
    save, hist = Trainer.save_checkpoint, GateLog.histograms
    monkeypatch.setattr(Trainer, "save_checkpoint", lambda self: saved.append(self.epoch) or save(self))
    monkeypatch.setattr(GateLog, "histograms", lambda self: copied.append(1) or hist(self))
    res = experiment.run(make_cfg("experiment=smoke", "trainer.epochs=5", "trainer.eval_every=2",
                                  "trainer.checkpoint_every_epochs=2"), str(tmp_path))
    assert saved == [2, 4, 5]  # every second epoch, and the last
    assert [("test_top1" in c) for c in res["curve"]] == [False, True, False, True, True]
    assert res["metrics"]["epoch"] == 5 and "test" in res["metrics"]
    assert copied == []  # logger=none keeps no histogram: none is copied to the host
