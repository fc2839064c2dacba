"""W&B never stops training: no key falls back to offline, an unreachable server too, and a
failing W&B call disables logging with one warning."""
import glob
import json
import os

import pytest

from gated_pruning import experiment

from conftest import make_cfg, run_py, wandb_history

NO_KEY = {"WANDB_API_KEY": None, "WANDB_MODE": None}


@pytest.mark.slow
def test_no_api_key_falls_back_to_offline_with_one_line(tmp_path):
    env = dict(NO_KEY, HOME=str(tmp_path / "home"), NETRC=str(tmp_path / "no-netrc"))
    r = run_py("experiment=smoke", "trainer.epochs=1", "logger=wandb", f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert r.returncode == 0, r.stderr
    said = [ln for ln in r.stderr.splitlines() if "no API key" in ln]
    assert len(said) == 1 and "offline" in said[0] and "wandb sync" in said[0]
    files = glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1
    _, rows, _ = wandb_history(files[0])
    assert any("test/top1" in row for row in rows)


@pytest.mark.slow
def test_unreachable_server_continues_offline(tmp_path):
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9",
           "HOME": str(tmp_path / "home")}
    r = run_py("experiment=smoke", "trainer.epochs=1", "logger=wandb", "logger.init_timeout=10",
               f"hydra.run.dir={tmp_path / 'run'}", env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(tmp_path / "run" / "results.json")
    assert any("logging offline" in ln or "not logging" in ln for ln in r.stderr.splitlines()), r.stderr


class Boom(Exception):
    pass


def test_wandb_init_failure_never_stops_training(tmp_path, monkeypatch, capsys):
    import wandb

    def fail(*a, **k):
        raise Boom("service exploded")

    monkeypatch.setattr(wandb, "init", fail)
    cfg = make_cfg("experiment=smoke", "trainer.epochs=1", "logger=wandb", "logger.mode=offline")
    res = experiment.run(cfg, str(tmp_path))
    assert res["metrics"]["epoch"] == 1 and res["wandb"]["run_id"] is None
    assert "init failed (Boom: service exploded); not logging" in capsys.readouterr().err


def test_a_failing_log_call_disables_logging_once(tmp_path, monkeypatch, capsys):
    import wandb

    calls = []

    class Run:
        id, dir = "fake", str(tmp_path)
        summary = {}

        def define_metric(self, *a, **k):
            pass

        def log(self, *a, **k):
            calls.append(a)
            raise Boom("disk full")

        def finish(self):
            calls.append("finish")

    monkeypatch.setattr(wandb, "init", lambda *a, **k: Run())
    cfg = make_cfg("experiment=smoke", "trainer.epochs=2", "logger=wandb", "logger.mode=offline")
    res = experiment.run(cfg, str(tmp_path))
    assert res["metrics"]["epoch"] == 2
    assert len(calls) == 1  # the first failure turned logging off: no finish, no more calls
    assert capsys.readouterr().err.count("log failed (Boom: disk full); logging disabled") == 1


@pytest.mark.slow
def test_tensorboard_gets_the_scalars_histograms_and_summary_that_wandb_gets(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    r = run_py("experiment=smoke", "logger=tensorboard", f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.load(open(run / "results.json"))
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0}).Reload()
    tags = acc.Tags()
    for i, name in enumerate(res["gates"]["layers"]):  # per-layer gate counts over time, as in results.json
        logged = {e.step: e.value for e in acc.Scalars(f"gates_zero/{name}")}
        assert logged == {h["step"]: h["zeros"][i] for h in res["gates"]["history"]}
        assert f"gates_hist/{name}" in tags["histograms"]
    final = {e.step: e.value for e in acc.Scalars("test/top1")}
    assert final[max(final)] == pytest.approx(res["metrics"]["test"]["top1"])
    # the summary (hparams): the numbers of the network the run delivers, as W&B's run summary holds them
    summary = {t: acc.Scalars(t)[-1].value for t in tags["scalars"] if t.startswith("final/")}
    assert summary["final/test_top1"] == pytest.approx(res["final"]["test_top1"])
    assert summary["final/flops_kept"] == pytest.approx(res["final"]["flops_kept"])
