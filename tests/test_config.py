"""Every config group option composes and builds; every experiment x method pair keeps what each
preset promises (the method wins where both set a key); a download that cannot happen is one line."""
import os

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gated_pruning.arch import model_node
from gated_pruning.config.keys import check_config, flatten, problems
from gated_pruning.optim import split_parameters
from gated_pruning.config.preflight import group_options

from conftest import CONF, make_cfg, preset_needs, run_py

GROUPS = group_options(CONF)


def test_the_promised_groups_exist():
    for group in ("model", "binarizer", "optimizer", "dataset", "trainer", "prune", "logger", "experiment"):
        assert group in GROUPS
    assert {"apg", "sgd"} <= set(GROUPS["optimizer"])
    assert {"none", "threshold", "stochastic"} <= set(GROUPS["binarizer"])
    assert {"vgg11", "vgg13", "vgg16", "vgg19"} <= set(GROUPS["model"])


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_option_composes(group, option, stub):
    name = f"{group}={option}"
    cfg = make_cfg(name, *preset_needs(stub).get(name, []))
    check_config(cfg)
    binarizer = instantiate(cfg.binarizer)
    model = instantiate(model_node(cfg), num_classes=10, binarizer=binarizer, width=0.0625) \
        if group == "model" else None
    if group == "optimizer":
        model = instantiate(model_node(make_cfg()), num_classes=10, binarizer=binarizer, width=0.0625)
        weights, gates = split_parameters(model)
        instantiate(cfg.optimizer.weights, params=weights)
        instantiate(cfg.optimizer.gates, params=gates)
    if model is not None:
        assert model.sizes() and model.units()


def test_gamma_is_top_level_and_reaches_every_penalty():
    for penalty in GROUPS["penalty"]:
        cfg = make_cfg(f"penalty={penalty}", "gamma=0.123")
        assert instantiate(cfg.penalty).gamma0 == 0.123


def preset(group: str, option: str) -> tuple[dict, dict]:
    """({flat key: value as written} that a preset file sets, {group: option} its defaults pick)."""
    raw = OmegaConf.to_container(OmegaConf.load(os.path.join(CONF, group, f"{option}.yaml")), resolve=False)
    picks = {}
    for entry in raw.pop("defaults", []):
        for k, v in entry.items():
            picks[k.replace("override ", "").strip("/")] = v
    return flatten(raw), picks


EXPERIMENTS, METHODS = GROUPS["experiment"], GROUPS["method"]
# the keys that an experiment and a method preset both set: the method's value wins (conf/config.yaml)
SHARED_KEYS = {"gamma"}
# the pairs that cannot run, and the one line that says so before any work
INVALID = {("imagenet_resnet50", "ista_bn"):
           "model.gate_position='scale' is not a gate position of gated_pruning.models.tv.build"}


@pytest.mark.parametrize("experiment,method", [(e, m) for e in EXPERIMENTS for m in METHODS])
def test_every_experiment_and_method_pair_keeps_what_each_promises(experiment, method, stub):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=[f"experiment={experiment}", f"method={method}",
                                 *preset_needs(stub).get(f"method={method}", [])])
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    got = flatten(OmegaConf.to_container(job, resolve=False))
    (exp, exp_picks), (meth, meth_picks) = preset("experiment", experiment), preset("method", method)
    assert set(exp) & set(meth) <= SHARED_KEYS  # a new shared key: decide and document who wins
    for key, value in {**exp, **meth}.items():  # the method's value where both set one
        if key.startswith("hydra."):  # the launcher's settings: Hydra's config, not the job's
            assert OmegaConf.select(cfg, key) == value, key
            continue
        assert got[key] == value, (key, got[key], value)
    for group, option in {**exp_picks, **meth_picks}.items():
        assert cfg.hydra.runtime.choices[group] == option, group
    if (experiment, method) in INVALID:  # refused in one line (ista_bn's gate position is VGG's)
        assert [p for p in problems(job) if INVALID[experiment, method] in p], problems(job)
        return
    assert not problems(job)  # every other pair is a valid run


def test_a_method_gamma_wins_over_the_experiments():
    assert make_cfg("experiment=cpu_cifar100").gamma == 5e-3
    assert make_cfg("experiment=cpu_cifar100", "method=sss").gamma == 1e-3
    assert make_cfg("experiment=cpu_cifar100", "method=sss", "gamma=2e-3").gamma == 2e-3  # the command line wins


@pytest.mark.slow
def test_download_impossible_names_the_fix(tmp_path):
    # download=true with no internet: the download fails and the message says how to supply data
    r = run_py("experiment=smoke", "dataset=cifar10", f"dataset.root={tmp_path}", "dataset.download=true",
               f"hydra.run.dir={tmp_path / 'run'}", timeout=300,
               env={"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cifar10 not found") and "the download failed" in last
    assert not (tmp_path / "run").exists()  # refused before training: the same command can run again


def test_float_gates_differ_from_binary_gates_in_the_binarizer_alone():
    # the controlled comparison of gate kinds: method=float_gates is method=binary with float gates
    binary = flatten(OmegaConf.to_container(make_cfg("method=binary", "target_flops=0.5"), resolve=True))
    floats = flatten(OmegaConf.to_container(make_cfg("method=float_gates", "target_flops=0.5"), resolve=True))
    differ = {k for k in binary.keys() | floats.keys() if binary.get(k) != floats.get(k)}
    assert differ == {"binarizer._target_", "binarizer.threshold", "binarizer.estimator"}
    assert floats["binarizer._target_"] == "gated_pruning.gates.NoBinarizer"
