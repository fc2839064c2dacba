"""Every config group option composes and builds; bad values get one line and a non-zero exit."""
import pytest
from hydra.utils import instantiate

from gated_pruning.preflight import group_options
from gated_pruning.config import check_config
from gated_pruning.optim import split_parameters

from conftest import CONF, make_cfg, preset_needs, run_py, snapshot

GROUPS = group_options(CONF)


def test_the_promised_groups_exist():
    for group in ("model", "binarizer", "optimizer", "dataset", "trainer", "prune", "logger", "experiment"):
        assert group in GROUPS
    assert {"apg", "sgd"} <= set(GROUPS["optimizer"])
    assert {"none", "threshold", "stochastic"} <= set(GROUPS["binarizer"])
    assert {"vgg11", "vgg13", "vgg16", "vgg19"} <= set(GROUPS["model"])


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_option_composes(group, option, finished_run):
    name = f"{group}={option}"
    cfg = make_cfg(name, *preset_needs(finished_run).get(name, []))
    check_config(cfg)
    binarizer = instantiate(cfg.binarizer)
    model = instantiate(cfg.model, num_classes=10, binarizer=binarizer, width=0.0625) \
        if group == "model" else None
    if group == "optimizer":
        model = instantiate(make_cfg().model, num_classes=10, binarizer=binarizer, width=0.0625)
        weights, gates = split_parameters(model)
        instantiate(cfg.optimizer.weights, params=weights)
        instantiate(cfg.optimizer.gates, params=gates)
    if model is not None:
        assert model.widths()


def test_gamma_is_top_level_and_reaches_every_penalty():
    for penalty in GROUPS["penalty"]:
        cfg = make_cfg(f"penalty={penalty}", "gamma=0.123")
        assert instantiate(cfg.penalty).gamma0 == 0.123


@pytest.fixture(scope="module")
def earlier_run(finished_run):
    """A finished run directory that the failing commands below must leave untouched."""
    return finished_run, snapshot(finished_run)


@pytest.mark.parametrize("override,needle", [
    ("gamma=-1e-3", "gamma=-0.001 must be >= 0"),
    ("optimizer.lr=0", "optimizer.lr=0 must be > 0"),
    ("optimizer=sgd optimizer.lr=-0.1", "optimizer.lr=-0.1 must be > 0"),
    ("binarizer=threshold binarizer.threshold=1.5", "binarizer.threshold=1.5 is outside [0, 1)"),
    ("binarizer=stochastic binarizer.estimator=magic", "binarizer.estimator='magic' is not one of"),
    ("optimizer=magic", "optimizer=magic is not an option of config group 'optimizer' (allowed: apg, sgd)"),
    ("binarizer=none,sign", "binarizer=sign is not an option"),
    ("optimizer.schedule=linear", "optimizer.schedule='linear' is not one of"),
    ("dataset=cifar100 dataset.root=/nonexistent dataset.download=false", "cifar100 not found under '/nonexistent'"),
    ("device=cuda:7", "device='cuda:7'"),
])
def test_bad_input_gets_one_line_and_nonzero_exit(override, needle, earlier_run, tmp_path):
    d, before = earlier_run
    r = run_py("experiment=smoke", *override.split(), f"hydra.run.dir={tmp_path / 'new'}",
               f"hydra.sweep.dir={tmp_path / 'multi'}")
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and needle in lines[-1], r.stderr
    assert "Traceback" not in r.stderr
    assert snapshot(d) == before


def test_download_impossible_names_the_fix(tmp_path):
    # download=true with no internet: the download fails and the message says how to supply data
    r = run_py("experiment=smoke", "dataset=cifar10", f"dataset.root={tmp_path}", "dataset.download=true",
               f"hydra.run.dir={tmp_path / 'run'}", timeout=300,
               env={"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cifar10 not found") and "the download failed" in last
