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
