"""Nothing lost, nothing silently wrong, round two (issue 16): a source run that cannot be retrained,
data files checked before the run directory exists, settings a run would not read, networks cut
dead or short of their target, budgets that miss theirs, full disks, stop signals in the first
seconds, sweep jobs that fail at run time, and resume commands that must work when pasted.

Each case asserts the exit status, the one `error:` or `warning:` line, no traceback, and, where
files are involved, that the files there before are byte-identical after."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from gated_pruning import arch, experiment, launch, reprune, runtime
from gated_pruning.models.vgg import build

from conftest import ROOT, FullDisk, make_cfg, one_error_line, run_py, snapshot, stub_run


def prepare(capsys, *argv):
    """(exit status, stderr) of run.py's checks and claim for this command line."""
    try:
        launch.prepare(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


# ------------------------------------------------------------------ refused before any work

@pytest.mark.parametrize("kind,needle", [
    ("deep", "its network has 13 prunable units, this model has 8"),
    ("dead", "every gate of conv3, conv4 is zero in that run"),
    ("no_widths", "results.json has no pruned widths"),
])
@pytest.mark.parametrize("method", ["scratch_e", "scratch_b"])
def test_a_source_run_that_cannot_be_retrained_is_refused(kind, needle, method, tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    if kind == "deep":
        stub_run(src, widths=[8] * 13)
    elif kind == "dead":
        stub_run(src, dead=["conv3", "conv4"])
    else:
        src.mkdir()
        (src / "results.json").write_text(json.dumps({"prune": {}}))
    before = snapshot(src)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    code, err = prepare(capsys, "experiment=smoke", f"method={method}", f"arch.run={src}")
    assert code == 2 and needle in one_error_line(err)
    assert os.listdir(tmp_path / "cwd") == [] and snapshot(src) == before


def npz(path, n_train=100, n_test=20, labels=None, **replace):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
              "y_train": rng.integers(0, 100, n_train) if labels is None else labels(n_train),
              "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
              "y_test": rng.integers(0, 100, n_test) if labels is None else labels(n_test)}
    arrays.update(replace)
    np.savez(path, **arrays)


def truncated(path):
    npz(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def one_flipped_byte(path):
    npz(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside x_train's pixels: only its checksum tells
    path.write_bytes(bytes(data))


DATA_CASES = [
    ("truncated", truncated, [], "is not a readable CIFAR .npz file"),
    ("garbage", lambda p: p.write_bytes(b"not a zip" * 100), [], "is not a readable CIFAR .npz file"),
    ("flipped", one_flipped_byte, [], "is damaged: x_train.npy does not match its checksum"),
    ("bool labels", lambda p: npz(p, labels=lambda n: np.ones(n, dtype=bool)), [], "train labels are bool"),
    ("object labels", lambda p: npz(p, labels=lambda n: np.array([1] * n, dtype=object)), [],
     "Object arrays cannot be loaded"),
    ("float images", lambda p: npz(p, x_train=np.zeros((100, 32, 32, 3), np.float32)), [],
     "train images are float32, expected uint8"),
    ("smaller than a batch", lambda p: npz(p, n_train=100), [], "dataset.batch_size=128 is larger than the training set (100 images)"),
    ("train_size", lambda p: npz(p), ["dataset.train_size=101", "dataset.batch_size=10"],
     "dataset.train_size=101 is larger than the cifar100 of"),
    ("val_size", lambda p: npz(p), ["dataset.val_size=100"], "dataset.val_size=100 leaves no training images"),
    ("test_size", lambda p: npz(p), ["dataset.test_size=21", "dataset.batch_size=10"], "dataset.test_size=21 is larger"),
    ("a folder", lambda p: p.mkdir(), [], "cifar100.npz is a folder, not a file"),
    ("a link loop", lambda p: os.symlink(p.name, p), [], "cifar100.npz is a symbolic link that leads back to itself"),
]


@pytest.mark.parametrize("name,make,extra,needle", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_a_data_file_is_checked_before_the_run_directory_exists(name, make, extra, needle, tmp_path, monkeypatch,
                                                                 capsys):
    data = tmp_path / "data"
    data.mkdir()
    make(data / "cifar100.npz")
    before = snapshot(data)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    code, err = prepare(capsys, "experiment=smoke", "dataset=cifar100", f"dataset.root={data}",
                        "dataset.download=false", *extra, "hydra.run.dir=run")
    assert code == 2 and needle in one_error_line(err), err
    assert os.listdir(tmp_path / "cwd") == []  # no run directory
    assert snapshot(data) == before


def test_a_good_npz_passes_and_its_arrays_are_counted(tmp_path):
    from gated_pruning.data import check_npz

    npz(tmp_path / "cifar100.npz", n_train=30, n_test=7)
    assert check_npz(str(tmp_path / "cifar100.npz"), "cifar100") == (30, 7)


# ------------------------------------------------------------------ settings a run would not read

WARNINGS = [
    ("method=dense target_flops=0.5", "target_flops=0.5 does nothing here: it is the FLOPs budget of a gated run, "
                                      "and model.gated=false"),
    ("target_flops=0.5 budget.enabled=false", "target_flops=0.5 does nothing here: it is the FLOPs budget of a "
                                              "gated run, and budget.enabled=false"),
    ("method=dense gamma=0.01", "gamma=0.01 does nothing here: model.gated=false trains a plain network"),
    ("method=dense optimizer.gates.lr=0.01", "optimizer.gates.lr=0.01 does nothing here: model.gated=false"),
    ("model.gated=false model.gate_position=relu", "model.gate_position='relu' does nothing here"),
    ("budget.kp=2", "budget.kp=2 does nothing here: the budget trains only a gated network with target_flops set"),
    ("prune.finetune_lr=0.1", "prune.finetune_lr=0.1 does nothing here: prune.finetune_epochs=0"),
    ("optimizer.milestones=[0.3]", "optimizer.milestones=[0.3] does nothing here: only schedule=multistep reads it"),
    ("prune.enabled=false prune.threshold=0.1", "prune.threshold=0.1 does nothing here: prune.enabled=false"),
    ("arch.target_flops=0.5", "arch.target_flops=0.5 does nothing here: only arch.source=uniform reads it"),
    ("arch.run=/somewhere", "arch.run='/somewhere' does nothing here: only arch.source=run reads it"),
    ("model.widths=[4,8,16,16,32,32,32,32] model.width=0.5", "model.width=0.5 does nothing here: model.widths"),
    # a preset's cut criterion without a cut (sweeps/cpu_study.sh trains slimming without a target,
    # to cut it later with the prune tool)
    ("method=slimming prune.finetune_epochs=0", "prune.criterion='gate' does nothing here: it ranks channels for a "
                                                "cut to prune.target_flops, which is null"),
    # issue 24: a floor per channel group where only blocks are gated
    ("model=resnet20 model.block_gates=true model.inner_gates=false model.min_keep=2",
     "model.min_keep=2 does nothing here: it is a floor per channel group, and only residual blocks are gated"),
    ("prune.rounds=3", "prune.rounds=3 does nothing here: only a cut to prune.target_flops has rounds"),
    ("model.weights_key=state_dict", "model.weights_key='state_dict' does nothing here"),
]


@pytest.mark.parametrize("line,needle", WARNINGS, ids=[w[0] for w in WARNINGS])
def test_a_setting_the_run_will_not_read_is_one_warning_and_the_run_goes_on(line, needle, tmp_path, monkeypatch,
                                                                            capsys):
    monkeypatch.chdir(tmp_path)
    code, err = prepare(capsys, "experiment=smoke", *line.split(), "hydra.run.dir=run")
    assert code == 0 and needle in one_error_line(err, "warning") and "error:" not in err, err
    assert os.listdir(tmp_path) == ["run"]  # claimed: the run goes on


def test_a_sweep_names_the_job_that_will_not_read_a_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = prepare(capsys, "-m", "experiment=smoke", "method=dense,sss", "gamma=0.01")
    assert code == 0 and one_error_line(err, "warning").startswith(
        "warning: job 0 of 2 (experiment=smoke method=dense gamma=0.01): gamma=0.01 does nothing here")


def test_a_fraction_of_a_layers_channels_is_a_floor(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = prepare(capsys, "experiment=smoke", "model.min_keep=0.05", "hydra.run.dir=run")
    assert code == 0 and err == ""
    model = build(11, 0.125, 10, min_keep=0.05)
    assert [g.min_keep for g in model.gates()] == [1, 1, 2, 2, 4, 4, 4, 4]  # ceil(0.05 x 8, 16, 32, 64)


# ------------------------------------------------------------------ targets: one meaning, and missed ones said

@pytest.mark.parametrize("goal,kept,missed,words", [
    ({"kind": "budget", "flops": 0.5}, 0.231, True, "the network keeps 23.1% of the FLOPs, 26.9 points under "
                                                    "target_flops=0.5; the budgets of method=sss and method=binary"),
    ({"kind": "budget", "flops": 0.5}, 0.529, False, None),
    ({"kind": "budget", "flops": 0.5}, 0.471, False, None),
    ({"kind": "uniform", "flops": 0.3}, 0.34, True, "the closest uniform width keeps 34.0% of the FLOPs (4.0 points over)"),
    ({"kind": "cut", "flops": 0.5}, 0.43, False, None),
    ({"kind": "cut", "flops": 1e-6}, 0.012, True, "prune.target_flops=1e-06 cannot be met: the cut keeps 1.2% of the "
                                                  "FLOPs (1.2 points over)"),
    ({"kind": "arch_run", "flops": 0.5}, 0.9, False, None),  # the source run's widths, whatever they reached
    ({"kind": None, "flops": None}, 0.9, False, None),
    ({"kind": "budget", "flops": 0.5}, None, False, None),  # not pruned: nothing measured
])
def test_a_target_is_held_or_missed_by_hand(goal, kept, missed, words):
    out, warning = arch.outcome(goal, kept)
    assert out == dict(goal, reached=kept, missed=missed)
    assert (warning is None) if words is None else words in warning


def test_a_budget_that_misses_its_target_says_so_at_the_end(tmp_path, capsys):
    # gamma held below 1e-8: the gates cannot close, the network keeps every FLOP
    cfg = make_cfg("experiment=smoke", "trainer.epochs=1", "target_flops=0.5", "gamma=1e-9",
                   "budget.min_gamma=1e-9", "budget.max_gamma=1e-8", "budget.freeze=null")
    res = experiment.run(cfg, str(tmp_path))
    assert res["target"] == {"kind": "budget", "flops": 0.5, "reached": 1.0, "missed": True}
    assert res["target_flops"] == 0.5 and json.load(open(tmp_path / "results.json"))["target"]["missed"] is True
    err = capsys.readouterr().err
    assert one_error_line("\n".join(ln for ln in err.splitlines() if ln.startswith(("warning", "error"))),
                          "warning") == ("warning: the FLOPs budget missed its target: the network keeps 100.0% of "
                                         "the FLOPs, 50.0 points over target_flops=0.5; the budgets of method=sss "
                                         "and method=binary hold their target")
    assert err.splitlines()[-1].startswith("warning: the FLOPs budget missed")  # at the end


def test_a_dead_network_cut_to_a_target_records_its_dead_layers_and_a_cut_short_of_it_says_so(tmp_path, capsys):
    # gamma=20 kills layers in one epoch (test_run); a cut to 1e-6 keeps one channel per layer
    res = experiment.run(make_cfg("experiment=smoke", "trainer.epochs=1", "gamma=20", "prune.target_flops=1e-6"),
                         str(tmp_path))
    dead = res["gates"]["dead_layers"]
    assert dead and res["prune"]["dead_layers"] == dead  # was [] for every cut to a target
    assert res["prune"]["compact"]["widths"] == [1] * 8 and res["prune"]["threshold"] is None
    assert res["target"]["kind"] == "cut" and res["target"]["missed"] and res["target"]["reached"] > 1e-6
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning: ")]
    assert f"warning: every gate of {', '.join(dead)} is zero: the pruned network keeps one zero channel there " \
           "and outputs a constant (prune.dead_layers)" in warnings
    assert warnings[-1].startswith("warning: prune.target_flops=1e-06 cannot be met: the cut keeps")


# ------------------------------------------------------------------ the prune tool

def tool(capsys, *argv):
    code = reprune.main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def dead_run(finished_run, tmp_path_factory):
    """The finished run with every gate at zero: a network whose every layer died."""
    d = tmp_path_factory.mktemp("dead")
    saved = torch.load(finished_run / "model.pt", weights_only=True)
    for k in saved["model"]:
        if k.endswith("gate.weight"):
            saved["model"][k].zero_()
    torch.save(saved, d / "model.pt")
    return d


def test_the_prune_tool_records_a_dead_network_cut_to_a_target_as_dead(dead_run, capsys):
    before = snapshot(dead_run)
    code, err = tool(capsys, dead_run, "--target-flops", "0.5", "--out", dead_run / "cut")
    assert code == 0 and "every gate of conv0, conv1, conv2, conv3, conv4, conv5, conv6, conv7 is zero" in \
        one_error_line(err, "warning")
    rec = json.load(open(dead_run / "cut" / "results.json"))
    assert rec["prune"]["dead_layers"] == [f"conv{i}" for i in range(8)]
    assert rec["target"]["kind"] == "cut" and not rec["target"]["missed"]
    assert {k: v for k, v in snapshot(dead_run).items() if not k.startswith("cut")} == before


def test_the_prune_tool_says_a_target_cannot_be_met_and_a_data_root_it_does_not_read(finished_run, tmp_path,
                                                                                     capsys):
    before = snapshot(finished_run)
    code, err = tool(capsys, finished_run, "--target-flops", "1e-6", "--out", tmp_path / "cut")
    assert code == 0 and "prune.target_flops=1e-06 cannot be met: the cut keeps" in one_error_line(err, "warning")
    rec = json.load(open(tmp_path / "cut" / "results.json"))
    assert rec["target"]["missed"] and rec["prune"]["compact"]["widths"] == [1] * 8 and rec["prune"]["threshold"] is None
    # the output folder has a run folder's mode (claim_dir's os.makedirs), not mkdtemp's 0700
    os.makedirs(tmp_path / "like" / "a_run")
    assert os.stat(tmp_path / "cut").st_mode & 0o777 == os.stat(tmp_path / "like" / "a_run").st_mode & 0o777 != 0o700
    code, err = tool(capsys, finished_run, "--threshold", "0", "--data-root", tmp_path, "--out", tmp_path / "again")
    assert code == 0 and f"--data-root {tmp_path} does nothing here: the run trained on synthetic data" in \
        one_error_line(err, "warning")
    assert snapshot(finished_run) == before


def test_the_prune_tool_on_a_full_disk_is_one_line_and_writes_nothing(finished_run, tmp_path, monkeypatch, capsys):
    before = snapshot(finished_run)
    monkeypatch.setattr(runtime, "open", lambda path, mode="r", *a: FullDisk(path, mode, room=4096), raising=False)
    code, err = tool(capsys, finished_run, "--threshold", "0", "--out", tmp_path / "out")
    assert code == 1 and "No space left on device; nothing was written (free some space and run the command again)" \
        in one_error_line(err)
    assert os.listdir(tmp_path) == [] and snapshot(finished_run) == before


# ------------------------------------------------------------------ through run.py

def run_with(setup: str, *args, cwd=ROOT, timeout=600):
    """run.py in a fresh interpreter after `setup` (Python run first, e.g. to patch a function)."""
    code = setup + "\nimport runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"
    return subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, "run.py"), *map(str, args)], cwd=cwd,
                          env=dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=f"{ROOT}:{ROOT}/tests"),
                          capture_output=True, text=True, timeout=timeout)


# the signal a user sends in the first seconds, delivered from inside the process at a chosen point
STOP_AT = """
import os, signal, time
import gated_pruning.{module} as module
real = module.{function}
def stopped(*a, **k):
    os.kill(os.getpid(), signal.{signal})
    time.sleep(5)  # the handler raises before this ends
    return real(*a, **k)
module.{function} = stopped
"""


@pytest.mark.slow
@pytest.mark.parametrize("module,function,sig,said", [
    ("config.preflight", "check_jobs", "SIGTERM", "stopped by SIGTERM before the run started; nothing was written"),
    ("launch", "run_job", "SIGINT", "stopped by SIGINT before the run started; nothing was written"),
    ("experiment", "build_data", "SIGTERM", "stopped by SIGTERM before a checkpoint was written; nothing was kept: "
                                           "run the same command again"),
    ("experiment", "build_trainer", "SIGINT", "stopped by SIGINT before a checkpoint was written; nothing was kept"),
])
def test_a_stop_in_the_first_seconds_is_one_line_and_leaves_nothing(module, function, sig, said, tmp_path,
                                                                    monkeypatch, capsys):
    mine = tmp_path / "mine"  # a folder of the user's, named as the run's directory: only its notes stay
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for run in (tmp_path / "new" / "run", mine):
        r = run_with(STOP_AT.format(module=module, function=function, signal=sig), "experiment=smoke",
                     f"hydra.run.dir={run}")
        assert r.returncode == {"SIGINT": 130, "SIGTERM": 143}[sig] and said in one_error_line(r.stderr), r.stderr
    assert os.listdir(tmp_path) == ["mine"] and snapshot(mine) == {"notes.txt": b"mine"}
    monkeypatch.chdir(tmp_path)
    assert prepare(capsys, "experiment=smoke", f"hydra.run.dir={mine}")[0] == 0  # the same command runs again


# a full disk at the second checkpoint: its file takes 1000 bytes, then refuses (torch's writer
# then fails to close the archive and raises its own RuntimeError over the OSError, as on a real disk)
FULL_AT_SECOND_CHECKPOINT = """
import os, shutil
from conftest import FullDisk
from gated_pruning import runtime
checkpoints = []
def opened(path, mode="r", *a, **k):
    if path.endswith("checkpoint.pt") and "w" in mode:
        checkpoints.append(path)
        if len(checkpoints) == 2:
            shutil.copy(os.path.join(os.path.dirname(os.path.dirname(path)), "checkpoint.pt"), {kept!r})
            return FullDisk(path, mode, room=1000)
    return open(path, mode, *a, **k)
runtime.open = opened
"""


@pytest.mark.slow
def test_a_full_disk_during_training_is_one_line_with_the_resume_command(tmp_path):
    run = tmp_path / "run"
    r = run_with(FULL_AT_SECOND_CHECKPOINT.format(kept=str(tmp_path / "first.pt")), "experiment=smoke",
                 "trainer.checkpoint_every_steps=2", f"hydra.run.dir={run}")
    line = one_error_line("\n".join(ln for ln in r.stderr.splitlines() if ln.startswith(("error", "warning"))))
    assert "Traceback" not in r.stderr and r.returncode == 1, r.stderr
    assert line.startswith(f"error: the disk is full: cannot write in {run} (No space left on device); free some "
                           "space, then continue from the last checkpoint with: python ")
    assert line.endswith(f"resume={run}/checkpoint.pt")
    assert (run / "checkpoint.pt").read_bytes() == (tmp_path / "first.pt").read_bytes()  # the first one, whole
    assert not [f for _, ds, fs in os.walk(run) for f in ds + fs if ".tmp" in f]


@pytest.mark.slow
def test_the_printed_resume_command_works_when_pasted(tmp_path):
    odd = tmp_path / "0_experiment=smoke,gamma=0.0001 é'x"  # a sweep job's folder, a space, non-ASCII, a quote
    args = ["experiment=smoke", "dataset.train_size=2048", "trainer.epochs=1", "trainer.checkpoint_every_steps=5",
            "gamma=0.0001"]
    from gated_pruning.config.preflight import quote

    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "run.py"), *args, f"hydra.run.dir={quote(str(odd))}"],
                            cwd=tmp_path, env=dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t = time.time()
    while not (odd / "checkpoint.pt").exists():
        assert proc.poll() is None and time.time() - t < 600, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    line = one_error_line(err)
    assert proc.returncode == 143 and "continue with: " in line, err
    pasted = line.split("continue with: ", 1)[1]
    shell = 'python() { "$PY" "$@"; }; ' + pasted  # `python` is this interpreter
    r = subprocess.run(["bash", "-c", shell], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PY=sys.executable, WANDB_MODE="disabled", PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr
    records = [os.path.join(d, "results.json") for d, _, fs in os.walk(tmp_path / "outputs") if "results.json" in fs]
    assert len(records) == 1 and json.load(open(records[0]))["config"]["resume"] == f"{odd}/checkpoint.pt"


LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
             "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_a_sweep_job_that_fails_at_run_time_is_recorded_and_the_sweep_goes_on(launcher, tmp_path):
    if launcher != "basic":
        pytest.importorskip(f"hydra_plugins.hydra_{launcher.split('_')[0]}_launcher")
    # job 0 diverges at its first step (lr 1e4); job 1 trains
    r = run_py("-m", *LAUNCHERS[launcher], "experiment=smoke", "trainer.epochs=1", "optimizer.schedule=constant",
               "trainer.checkpoint_every_steps=1", "optimizer.lr=1e4,0.05", f"hydra.sweep.dir={tmp_path}", timeout=900)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr[-3000:]
    assert errors[0].startswith("error: job 0 of 2 (experiment=smoke ") and "optimizer.lr=10000.0)" in errors[0] and \
        "failed: " in errors[0] and "NaN or infinite" in errors[0] and errors[0].endswith("the other 1 finished")
    jobs = sorted(j for j in os.listdir(tmp_path) if j[0].isdigit())  # not .submitit/
    failed = json.load(open(tmp_path / jobs[0] / "failure.json"))
    assert failed["job"] == 0 and failed["exit_code"] == 2 and "NaN or infinite" in failed["error"]
    assert not (tmp_path / jobs[0] / "results.json").exists()
    assert json.load(open(tmp_path / jobs[1] / "results.json"))["config"]["optimizer"]["lr"] == 0.05
    # each job's printed lines are in its folder, whichever launcher ran it
    failed_log = (tmp_path / jobs[0] / "run.log").read_text()
    assert "warning: job 0 (" in failed_log and "NaN or infinite" in failed_log
    done_log = (tmp_path / jobs[1] / "run.log").read_text().splitlines()
    assert done_log[0].startswith("epoch 1: ") and [ln for ln in done_log if ln.startswith("results: ")]


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after_checkpoints", "at_once"])
def test_a_stopped_joblib_sweep_saves_every_running_job_and_lists_how_to_resume(when, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sw"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "experiment=smoke", "dataset.train_size=4096",
            "trainer.epochs=2", "trainer.checkpoint_every_steps=5", "seed=0,1,2", f"hydra.sweep.dir={sweep}"]
    t = time.time()
    if when == "after_checkpoints":  # both running jobs have saved once: the signal comes mid-epoch
        ready = lambda: len(glob.glob(str(sweep / "*" / "checkpoint.pt"))) >= 2  # noqa: E731
    else:  # training has begun, no checkpoint yet (issue 24 saw the whole sweep folder deleted): the
        # first TensorBoard event file of each job says its first steps are done
        args[6:7] = ["trainer.checkpoint_every_steps=0", "logger=tensorboard", "trainer.log_every=1"]
        ready = lambda: len(glob.glob(str(sweep / "*" / "tensorboard" / "events.*"))) >= 2  # noqa: E731
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "run.py"), *args], cwd=tmp_path,
                            env=dict(os.environ, WANDB_MODE="disabled"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while not ready():
        assert proc.poll() is None and time.time() - t < 600, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to the sweep's own process only, as a batch system may
    _, err = proc.communicate(timeout=600)
    line = one_error_line("\n".join(ln for ln in err.splitlines() if ln.startswith(("error:", "warning:"))))
    assert proc.returncode == 143, err[-3000:]
    stopped = sorted(glob.glob(str(sweep / "*" / "stopped.json")))
    assert len(stopped) == 2 and "2 job(s) saved a checkpoint, continue each with: job 0: " in line, line
    assert not glob.glob(str(sweep / "2_*"))  # the third job never started: no folder left of it
    record = json.load(open(stopped[0]))
    assert os.path.isfile(record["checkpoint"]) and record["resume"] in line
    r = subprocess.run(["bash", "-c", 'python() { "$PY" "$@"; }; ' + record["resume"]], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, PY=sys.executable, WANDB_MODE="disabled"))
    assert r.returncode == 0, r.stderr[-2000:]


def damaged(src, dst):
    """A copy of `src` with 64 bytes in its middle flipped (what a bad disk or a cut copy leaves)."""
    data = bytearray(open(src, "rb").read())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    open(dst, "wb").write(bytes(data))
    return dst


@pytest.mark.slow
def test_a_damaged_checkpoint_model_or_compact_file_is_one_line_naming_it(tmp_path):
    run = tmp_path / "run"
    assert run_py("experiment=smoke", "trainer.epochs=1", f"hydra.run.dir={run}").returncode == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    damaged(run / "checkpoint.pt", bad / "checkpoint.pt")
    r = run_py("experiment=smoke", "trainer.epochs=1", f"resume={bad / 'checkpoint.pt'}",
               f"hydra.run.dir={tmp_path / 'resumed'}")
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and f"{bad / 'checkpoint.pt'} is damaged" in line and "checksum" in line, line
    assert not (tmp_path / "resumed").exists()
    damaged(run / "model.pt", bad / "model.pt")
    r = subprocess.run([sys.executable, "-m", "gated_pruning.reprune", str(bad), "--threshold", "0"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and f"{bad / 'model.pt'} is damaged" in one_error_line(r.stderr)
    damaged(run / "compact.pt2", bad / "compact.pt2")
    r = subprocess.run([sys.executable, "-m", "gated_pruning.evaluate", str(bad / "compact.pt2")], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and f"{bad / 'compact.pt2'} is damaged" in one_error_line(r.stderr)
    r = run_py("experiment=smoke", f"model.weights={bad / 'model.pt'}", f"hydra.run.dir={tmp_path / 'w'}")
    assert r.returncode == 2 and "is damaged" in one_error_line(r.stderr)


@pytest.mark.slow
def test_messages_name_the_key_to_change_and_a_file_that_exists(tmp_path):
    # fine-tuning that diverges: its own learning rate, not a checkpoint that never exists
    r = run_py("experiment=smoke", "method=l1norm", "target_flops=0.5", "prune.finetune_lr=1e5",
               f"hydra.run.dir={tmp_path / 'ft'}")
    line = one_error_line(r.stderr)
    assert "fine-tuning loss became NaN or infinite" in line and "lower prune.finetune_lr (it is 100000)" in line
    assert "finetune_checkpoint.pt" not in line
    # training that diverges before its first checkpoint says there is none
    r = run_py("experiment=smoke", "optimizer.lr=1e4", "optimizer.schedule=constant", f"hydra.run.dir={tmp_path / 'd'}")
    assert "lower optimizer.lr (it is 10000) or gamma; no checkpoint was saved yet" in one_error_line(r.stderr)
    # a truncated record as a source of widths: cannot be read, not "has no pruned widths"
    (tmp_path / "trunc").mkdir()
    (tmp_path / "trunc" / "results.json").write_text('{"prune": {"compact": {"wid')
    r = run_py("experiment=smoke", "method=scratch_e", f"arch.run={tmp_path / 'trunc'}",
               f"hydra.run.dir={tmp_path / 's'}")
    assert "its results.json cannot be read (JSONDecodeError" in one_error_line(r.stderr)


def test_a_tool_refused_its_output_folder_leaves_none_of_the_folders_it_made(finished_run, tmp_path, capsys):
    out = tmp_path / "made" / "for" / ("x" * 300)  # a name too long for the file system
    assert reprune.main([str(finished_run), "--threshold", "0", "--out", str(out)]) == 2
    assert "cannot write there (File name too long)" in capsys.readouterr().err
    assert not (tmp_path / "made").exists()


@pytest.mark.slow
def test_a_missing_torch_pruning_is_found_before_the_run_not_after_its_training(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import importlib.util\n_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a, **k: None if n == 'torch_pruning' else _find(n, *a, **k)\n")
    r = run_py("experiment=smoke", f"hydra.run.dir={tmp_path / 'run'}", env={"PYTHONPATH": str(hide)})
    assert r.returncode == 2 and "torch-pruning is not installed" in one_error_line(r.stderr)
    assert not (tmp_path / "run").exists()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped exception, as expected
def test_a_stop_whose_exception_python_drops_in_a_callback_still_stops_the_run_before_it_writes():
    """A SIGTERM handled inside a weakref callback (importlib's module locks use them): Python
    prints "Exception ignored" and goes on, so the run would write its results as if never
    stopped; `raise_if_stopped`, called before results.json and compact.pt2 are written, stops it."""
    import weakref

    from gated_pruning.errors import Interrupted, raise_if_stopped, stop_signals_raise

    class Thing:
        pass

    def callback(_):
        signal.raise_signal(signal.SIGTERM)
        sum(range(1000))  # the handler runs between these bytecodes: its exception is dropped

    went_on = False
    with pytest.raises(Interrupted, match="SIGTERM"):
        with stop_signals_raise():
            thing = Thing()
            ref = weakref.ref(thing, callback)
            del thing
            went_on = ref() is None
            raise_if_stopped()
    assert went_on  # the signal's own exception did not stop the block
    raise_if_stopped()  # outside the block nothing is pending
