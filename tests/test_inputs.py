"""Nothing lost, nothing silently wrong: every key has a rule; every bad input of run.py (every
job of a sweep included) and of the three tools gets one `error:` line before any work; a run
never writes into another run's directory, and a refused run writes nothing anywhere.

Most cases call the functions `run.py` and the tools call (`launch.prepare`, `reprune.main`, ...)
in this process: the same code, without a second of interpreter start-up each. A few go
through `run.py` itself to check the wiring (exit status, stderr, the files on disk)."""
import json
import os
import shutil

import pytest
import torch

from gated_pruning import evaluate, launch, pruning, reprune
from gated_pruning.reports import sweep
from gated_pruning.config.keys import RULES, check_config, problems
from gated_pruning.config.preflight import group_options, quote

from conftest import CONF, make_cfg, one_error_line, preset_needs, run_py, snapshot

GROUPS = group_options(CONF)


# ------------------------------------------------------------------ every key has a rule

def compositions(run_dir):
    """The config of every option of every group, and of every preset (with what the preset
    needs from its user: the run whose architecture it retrains, the FLOPs to scale to)."""
    needs = preset_needs(run_dir)
    for group, options in GROUPS.items():
        if group == "hydra":
            continue
        for option in options:
            name = f"{group}={option}"
            yield name, make_cfg(name, *needs.get(name, []))


def test_every_key_of_every_option_and_preset_has_a_rule_and_passes_it(stub):
    seen = set()
    for name, cfg in compositions(stub):
        found = problems(cfg)
        assert not found, f"{name}: {found}"  # a key without a rule is reported here, by name
        from gated_pruning.config.keys import flatten
        from omegaconf import OmegaConf
        seen |= set(flatten(OmegaConf.to_container(cfg, resolve=True)))
    assert not set(RULES) - seen, f"rules for keys no config has: {sorted(set(RULES) - seen)}"


def test_a_key_without_a_rule_is_refused():
    cfg = make_cfg("experiment=smoke")
    c = json.loads(json.dumps(__import__("omegaconf").OmegaConf.to_container(cfg, resolve=True)))
    c["trainer"]["new_knob"] = 3
    with pytest.raises(Exception, match=r"trainer.new_knob=3: no validation rule .*RULES"):
        check_config(c)


# ------------------------------------------------------------------ run.py: every value, before any work

def preflight(capsys, *argv):
    """(exit status, the one error line) of run.py's checks for this command line."""
    with pytest.raises(SystemExit) as e:
        launch.prepare(list(argv))
    return e.value.code, one_error_line(capsys.readouterr().err)


# (command line, what the one line must say); every one fails before any work
BAD_RUNS = [
    # top-level keys
    ("gamma=-1e-3", "gamma=-0.001 must be >= 0"),
    ("gamma=abc", "gamma='abc' is not a number"),
    ("gamma=nan", "gamma=nan must be a finite number"),
    ("gamma=inf", "gamma=inf must be a finite number"),
    ("gamma=null", "gamma=null must be a finite number >= 0, not null"),
    ("gamma=true", "gamma=true is not a number"),
    ("gamma=[1]", "gamma=[1] is not a number"),
    ("seed=-1", "seed=-1 is outside [0, 4294967295]"),
    ("seed=1.5", "seed=1.5 is not an integer"),
    ("device=tpu", "device='tpu' is not a device"),
    ("device=cuda:x", "device='cuda:x' is not a device"),
    ("device=1", "device=1 must be a string"),
    ("resume=", "resume='' must not be empty"),
    ("resume=/nonexistent/run", "resume=/nonexistent/run: no such checkpoint file"),
    # model
    ("model.depth=12", "model.depth=12 is not one of 11, 13, 16, 19"),
    ("model.width=0", "model.width=0 must be > 0"),
    ("model.width=-0.5", "model.width=-0.5 must be > 0"),
    ("model.gated=maybe", "model.gated='maybe' must be true or false"),
    ("model.gate_init=abc", "model.gate_init='abc' is not a number"),
    ("model._target_=os.system", "model._target_='os.system' is not one of"),
    ("model=vgg12", "model=vgg12 is not an option of config group 'model' (allowed: custom, resnet110, resnet20, resnet56, torchvision, vgg11, vgg13, vgg16, vgg19)"),
    # binarizer
    ("binarizer=threshold binarizer.threshold=1.5", "binarizer.threshold=1.5 is outside [0, 1)"),
    ("binarizer=threshold binarizer.threshold=-0.1", "binarizer.threshold=-0.1 is outside [0, 1)"),
    ("binarizer=stochastic binarizer.estimator=magic", "binarizer.estimator='magic' is not one of identity, clipped"),
    ("binarizer=none binarizer.threshold=0.5", "binarizer.threshold=0.5: binarizer=none has no key threshold"),
    ("binarizer=none,sign", "binarizer=sign is not an option"),
    # optimizer
    ("optimizer.lr=0", "optimizer.lr=0 must be > 0"),
    ("optimizer=sgd optimizer.lr=-0.1", "optimizer.lr=-0.1 must be > 0"),
    ("optimizer.momentum=1", "optimizer.momentum=1 is outside [0, 1)"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1 must be >= 0"),
    ("optimizer.schedule=linear", "optimizer.schedule='linear' is not one of"),
    ("optimizer.milestones=[0.5,1.5]", "optimizer.milestones=[0.5, 1.5] holds 1.5, which is outside [0, 1]"),
    ("optimizer.milestones=0.5", "optimizer.milestones=0.5 must be a list"),
    ("optimizer.factor=0", "optimizer.factor=0 must be > 0"),
    ("optimizer.warmup_epochs=-1", "optimizer.warmup_epochs=-1 must be >= 0"),
    ("optimizer.warmup_epochs=5", "optimizer.warmup_epochs=5 is longer than the run (trainer.epochs=2)"),
    ("optimizer.gates.forward=back", "optimizer.gates.forward='back' is not one of lookahead, prox"),
    ("optimizer.gates.clamp=yes", "optimizer.gates.clamp='yes' must be one of prox, lookahead, none or true"),
    ("optimizer.gates.clamp=true", "optimizer.gates.clamp=true: with this gate optimizer it is prox, lookahead or none"),
    ("optimizer=sgd optimizer.gates.clamp=prox", "optimizer.gates.clamp='prox': with this gate optimizer it is true or false"),
    ("optimizer.gates.upper=0", "optimizer.gates.upper=0 must be > 0"),
    ("optimizer.weights.nesterov=1", "optimizer.weights.nesterov=1 must be true or false"),
    # the penalty, the FLOPs budget, the architecture a run trains
    ("target_flops=0", "target_flops=0 is outside (0, 1]"),
    ("target_flops=1.5", "target_flops=1.5 is outside (0, 1]"),
    ("penalty=polarization penalty.t=0", "penalty.t=0 must be > 0"),
    ("penalty=polarization penalty.scope=net", "penalty.scope='net' is not one of layer, global"),
    ("penalty.flops_weighted=2", "penalty.flops_weighted=2 must be true or false"),
    ("budget.ramp=2", "budget.ramp=2 is outside [0, 1]"),
    ("budget.freeze=0", "budget.freeze=0 is outside (0, 1]"),
    ("budget.min_gamma=1 budget.max_gamma=0.1", "budget.min_gamma=1 is above budget.max_gamma=0.1"),
    ("arch.source=uniform", "arch.source=uniform needs arch.target_flops"),
    ("arch.source=uniform arch.target_flops=0.5", "arch.source=uniform trains a plain network"),
    ("arch.source=run model.gated=false", "arch.source=run needs arch.run="),
    ("arch.source=run arch.run=/nonexistent model.gated=false", "arch.run=/nonexistent: no results.json there"),
    ("arch.epochs=flops", "arch.epochs=flops scales the epochs by a reference network"),
    ("model.gate_position=middle", "model.gate_position='middle' is not one of bn, relu"),
    ("model.gate_position=relu optimizer.gates.clamp=none", "model.gate_position=relu with float gates needs them clamped"),
    ("model.gate_position=scale", "model.gate_position=scale makes the gate batch norm's scale: set model.bn_weight=false"),
    ("model=resnet20 model.gate_position=scale model.bn_weight=false",
     "model.gate_position='scale' is not a gate position of gated_pruning.models.resnet.build (one of bn, relu)"),
    ("model.min_keep=-1", "model.min_keep=-1 must be a finite number in [0, 1) or an integer >= 1"),
    ("model.widths=[4,0]", "model.widths=[4, 0] holds 0, which must be >= 1"),
    ("binarizer=hard_concrete binarizer.estimator=clipped", "binarizer.estimator='clipped' is not one of relaxed, straight_through"),
    ("binarizer=hard_concrete binarizer.stretch=[0,1]", "binarizer.stretch=[0, 1] must be [gamma, zeta]"),
    ("binarizer=hard_concrete binarizer.temperature=0", "binarizer.temperature=0 must be > 0"),
    ("prune.target_flops=2", "prune.target_flops=2 is outside (0, 1]"),
    ("prune.criterion=random", "prune.criterion='random' is not one of gate, l1norm"),
    ("optimizer.weights.lr=-1", "optimizer.weights.lr=-1 must be > 0"),
    ("optimizer.weights._target_=torch.optim.Adam", "optimizer.weights._target_='torch.optim.Adam' is not one of"),
    ("optimizer=sgd optimizer.gates.forward=prox", "optimizer=sgd has no key gates.forward"),
    ("optimizer=magic", "optimizer=magic is not an option of config group 'optimizer' (allowed: apg, sgd)"),
    # dataset
    ("dataset.batch_size=0", "dataset.batch_size=0 must be >= 1"),
    ("dataset.batch_size=1000", "dataset.batch_size=1000 is larger than the training set (512 images)"),
    ("dataset.eval_batch_size=0", "dataset.eval_batch_size=0 must be >= 1"),
    ("dataset.train_size=-5", "dataset.train_size=-5 must be >= 1"),
    ("dataset.train_size=null", "dataset.train_size=null: a synthetic data set needs a size"),
    ("dataset.test_size=0", "dataset.test_size=0 must be >= 1"),
    ("dataset.pad=-1", "dataset.pad=-1 is outside [0, 64]"),
    ("dataset.flip=2", "dataset.flip=2 must be true or false"),
    ("dataset.num_classes=1", "dataset.num_classes=1 is outside [2, 100000]"),
    ("dataset.name=cifar100", "dataset.name='cifar100' needs dataset.root"),
    ("dataset.root=x", "dataset.root=x: dataset=synthetic has no key root"),
    ("dataset=cifar100 dataset.train_size=60000", "dataset.train_size=60000 is larger than the cifar100 train set"),
    ("dataset=cifar100 dataset.test_size=10001", "dataset.test_size=10001 is larger than the cifar100 test set"),
    ("dataset=cifar100 dataset.root=/nonexistent dataset.download=false", "cifar100 not found under '/nonexistent'"),
    ("dataset=cifar100 dataset.root=/etc/hostname dataset.download=false", "is a file, not a folder"),
    ("dataset=cifar100 dataset.root=''", "dataset.root='' must not be empty"),
    ("dataset=cifar100 dataset.download=maybe", "dataset.download='maybe' must be true or false"),
    # trainer
    ("trainer.epochs=0", "trainer.epochs=0 trains nothing: it needs model.weights=PATH"),
    ("trainer.epochs=-1", "trainer.epochs=-1 must be >= 0"),
    ("trainer.epochs=2.5", "trainer.epochs=2.5 is not an integer"),
    ("trainer.log_every=-1", "trainer.log_every=-1 must be >= 0"),
    ("trainer.eps=-1", "trainer.eps=-1 must be >= 0"),
    ("trainer.checkpoint=2", "trainer.checkpoint=2 must be true or false"),
    ("trainer.checkpoint_every_steps=-1", "trainer.checkpoint_every_steps=-1 must be >= 0"),
    ("trainer.progress=maybe", "trainer.progress='maybe' must be true or false"),
    ("trainer.amp=1", "trainer.amp=1 must be true or false"),
    ("trainer.channels_last=null", "trainer.channels_last=null must be true or false, not null"),
    ("trainer.compile=x", "trainer.compile='x' must be true or false"),
    # prune
    ("prune.threshold=-1", "prune.threshold=-1 must be >= 0"),
    ("prune.finetune_epochs=-1", "prune.finetune_epochs=-1 must be >= 0"),
    ("prune.finetune_lr=0", "prune.finetune_lr=0 must be > 0"),
    ("prune.latency_batch=0", "prune.latency_batch=0 must be >= 1"),
    ("prune.latency_reps=0", "prune.latency_reps=0 must be >= 1"),
    ("prune.latency_warmup=-1", "prune.latency_warmup=-1 must be >= 0"),
    ("prune.round_to=0", "prune.round_to=0 must be >= 1"),
    ("prune.enabled=3", "prune.enabled=3 must be true or false"),
    ("prune.enabled=false prune.finetune_epochs=1", "prune.finetune_epochs=1 has no effect with prune.enabled=false"),
    # logger
    ("logger=wandb logger.project=''", "logger.project='' must not be empty"),
    ("logger=wandb logger.mode=sometimes", "logger.mode='sometimes' is not one of online, offline, disabled"),
    ("logger=wandb logger.init_timeout=0", "logger.init_timeout=0 must be > 0"),
    ("logger=wandb logger.tags=[1]", "logger.tags=[1] holds 1, which must be a string"),
    ("logger=wandb logger.tags=x", "logger.tags='x' must be a list"),
    ("logger.name=x", "logger.name='x' is not one of wandb, tensorboard, none"),
    # keys: misspelled, added, deleted, replaced
    ("gama=1", "gama=1: no such config key; did you mean gamma?"),
    ("optimizer.lrr=1", "optimizer.lrr=1: no such config key; did you mean optimizer.lr?"),
    ("optimzer=sgd", "optimzer=sgd: no such config key; did you mean optimizer?"),
    ("trainer.epoch=3", "did you mean trainer.epochs?"),
    ("+gama=1", "+gama=1: no such config key (a + adds a key nothing reads); did you mean gamma?"),
    ("++gama=1", "++gama=1: no such config key; did you mean gamma?"),
    ("+gamma=1", "+gamma=1: gamma exists already; write gamma=... without the +"),
    ("+dataset.root=x", "+dataset.root=x: dataset=synthetic has no key root"),
    ("~gamma", "~gamma: removing a config key is not supported"),
    ("optimizer.gates=3", "is missing: an override replaced the section that holds it"),
    # issue 16: combinations that make no sense, values a launcher cannot take, checks that ran
    # only once the run directory existed
    ("device=cuda:7", "device='cuda:7'"),
    ("hydra.run.dir=/proc/no/run", "hydra.run.dir=/proc/no/run: cannot create the output directory there"),
    ("binarizer=hard_concrete", "binarizer=hard_concrete needs penalty=l0"),
    ("penalty=l0", "penalty=l0 needs binarizer=hard_concrete"),
    ("target_flops=0.5 budget.start=0.6 budget.ramp=0.5", "the ramp must be > 0 and end within the run (start + ramp <= 1)"),
    ("target_flops=0.5 budget.ramp=0", "the ramp must be > 0"),
    ("target_flops=0.5 budget.freeze=0.3", "budget.freeze=0.3 comes before the ramp ends"),
    ("target_flops=0.5 budget.ki=0", "budget.ki=0 must be > 0"),
    ("target_flops=0.5 gamma=0", "the budget starts from gamma, it must be > 0"),
    ("budget.min_gamma=0.1 budget.max_gamma=0.1", "budget.min_gamma=0.1 equals budget.max_gamma=0.1"),
    ("model.widths=[4,8]", "model.widths=[4, 8]: VGG-11 needs 8 conv widths"),
    ("model.min_keep=1.5", "model.min_keep=1.5 must be a finite number in [0, 1) or an integer >= 1"),
    ("method=uniform target_flops=0.5 model.widths=[4,8,16,16,32,32,32,32]",
     "model.widths=[4, 8, 16, 16, 32, 32, 32, 32] and arch.source=uniform both set the widths"),
    ("method=l1norm", "prune.finetune_epochs=1 fine-tunes the pruned network, but a plain network (model.gated="
                      "false) is pruned only by a cut to prune.target_flops, which is null (method=l1norm cuts"),
    ("method=dense prune.finetune_epochs=1", "prune.finetune_epochs=1 fine-tunes the pruned network, but a plain network"),
    ("prune.target_flops=0.5 prune.round_to=8", "prune.round_to=8 shapes a cut of the zero gates; prune.target_flops=0.5 sets"),
    ("prune.target_flops=0.5 prune.threshold=0.1", "prune.threshold=0.1 shapes a cut of the zero gates"),
    ("-m gamma=0,1 hydra/launcher=submitit_local hydra.launcher.tasks_per_node=2",
     "tasks_per_node=2 would start 2 processes that each train the same job into one folder"),
    ("-m gamma=0,1 hydra/launcher=submitit_local hydra.launcher.nodes=2", "would start 2 processes"),
    ("-m gamma=0,1 hydra/launcher=submitit_local hydra.launcher.timeout_min=-5",
     "hydra.launcher.timeout_min=-5 must be >= 1"),
    ("-m gamma=0,1 hydra/launcher=submitit_local hydra.launcher.mem_gb=0", "hydra.launcher.mem_gb=0 must be > 0"),
    ("-m gamma=0,1 hydra/launcher=joblib hydra.launcher.n_jobs=0", "hydra.launcher.n_jobs=0 runs no job"),
    ("-m gamma=0,1 hydra/launcher=joblib hydra.launcher.timeout=-1", "hydra.launcher.timeout=-1.0 must be > 0"),
    # syntax, flags, Hydra's own keys
    ("gamma=[1", "cannot parse the overrides"),
    ("gamma=0.1,0.2", "Ambiguous value for argument 'gamma=0.1,0.2'"),
    ("--gamma=1", "unrecognized arguments: --gamma=1"),
    ("--nope", "unrecognized arguments: --nope"),
    ("hydra.job.chdir=maybe", "hydra.job.chdir=maybe"),
    ("hydra/launcher=nope", "Could not find 'hydra/launcher/nope'"),
    ("--config-name=nope", "Cannot find primary config 'nope'"),
    ("--config-dir=/nonexistent", "--config-dir=/nonexistent: no such directory"),
    ("--cfg=nope", "argument --cfg/-c: invalid choice: 'nope'"),
    ("--info=nope", "argument --info/-i: invalid choice: 'nope'"),
    ("--resolve", "--resolve only goes with --cfg or --help"),
    ("-m --run", "only one of --run, --multirun, --cfg, --info and --shell-completion"),
    ("--experimental-rerun=/nonexistent", "--experimental-rerun /nonexistent: no such file"),
    # output directories that cannot be made
    ("hydra.run.dir=/etc/hostname/run", "hydra.run.dir=/etc/hostname/run: cannot create the output directory there"),
    ("hydra.run.dir=/etc/hostname", "cannot create the output directory there (a file of that name exists)"),
    # sweeps: every job is checked before the first one starts
    ("-m optimizer.lr=0.05,-1,0.1", "job 1 of 3 (optimizer.lr=-1 experiment=smoke): optimizer.lr=-1 must be > 0"),
    ("-m gamma=0,abc", "job 1 of 2 (gamma=abc experiment=smoke): gamma='abc' is not a number"),
    ("-m dataset.batch_size=32,10000", "job 1 of 2"),
    ("-m trainer.epochs=1,2 optimizer.warmup_epochs=1.5", "job 0 of 2"),
    ("-m gamma=0,1 hydra.sweep.subdir=same", "gives jobs 0 and 1 the same directory 'same'"),
    ("-m seed=0,1 hydra.sweep.subdir=${hydra:runtime.choices.method}",
     "hydra.sweep.subdir=${hydra:runtime.choices.method}: job 0: "),  # no method chosen: None
    ("-m gama=0,1", "gama=0,1: no such config key; did you mean gamma?"),
    # issue 24: interpolations that do not resolve, sizes that cannot be made, networks that cannot be built
    ("seed=${oc.env:GATED_PRUNING_UNSET}", "cannot resolve the config (KeyError raised while resolving interpolation"),
    ("gamma=${no.such.key}", "Interpolation key 'no.such.key' not found"),
    ("dataset.val_size=100000000", "synthetic images of 32 px take about 2,289 GiB to make; at most 8 GiB"),
    ("model=torchvision model.width=2", "a width above 1 would need new channels it does not define"),
    ("model=torchvision model.name=regnet_y_400mf", "is a grouped convolution (6 groups) that is not depthwise"),
    ("model=torchvision model.name=fcn_resnet50", "model.name=fcn_resnet50 is not a torchvision classification model"),
    ("model=torchvision model.name=raft_small", "model.name=raft_small is not a torchvision classification model"),
    ("method=scratch_e arch.run=/dev/null/x", "arch.run=/dev/null/x: no results.json there"),
    ("-m seed=0,1 hydra.sweep.subdir=" + "x" * 300 + "_${hydra.job.num}",
     "a folder name of 302 bytes (" + "x" * 60 + "...): longer than a file system allows (255)"),
    ("-m seed=0,1 hydra.sweep.subdir=../out_${hydra.job.num}", "which is not inside the sweep folder"),
]


@pytest.mark.parametrize("line,needle", BAD_RUNS, ids=[b[0] for b in BAD_RUNS])
def test_every_bad_run_input_is_one_line_before_any_work(line, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default outputs/ and multirun/ would land here
    argv = line.split()
    flags = [a for a in argv if a.startswith("-") and not a.startswith("-m=")]
    code, err = preflight(capsys, *flags, *[a for a in argv if a not in flags], "experiment=smoke")
    assert code == 2 and needle in err, err
    assert os.listdir(tmp_path) == []  # nothing written anywhere


@pytest.mark.slow
def test_run_py_itself_gives_one_line_and_writes_nothing(tmp_path, finished_run):
    earlier = snapshot(finished_run)  # a run the failing commands must leave as it is
    for args, needle in [(["gamma=abc"], "gamma='abc' is not a number"),
                         (["gama=1"], "did you mean gamma?"),
                         (["-m", "optimizer.lr=0.05,-1,0.1"], "job 1 of 3")]:
        r = run_py(*args, "experiment=smoke", cwd=str(tmp_path))
        assert r.returncode == 2 and needle in one_error_line(r.stderr), r.stderr
    assert os.listdir(tmp_path) == []  # no outputs/, no multirun/: not even job 0 ran
    assert snapshot(finished_run) == earlier


# ------------------------------------------------------------------ a directory of its own

@pytest.mark.slow
def test_a_run_never_writes_into_another_runs_directory(finished_run, tmp_path):
    before = snapshot(finished_run)
    sweep = tmp_path / "sweep"
    (sweep / "0_gamma=0").mkdir(parents=True)
    (sweep / "0_gamma=0" / "results.json").write_text("{}")
    cases = [
        ([f"hydra.run.dir={finished_run}"], f"hydra.run.dir={finished_run} already holds another run (.hydra/, "
                                            "results.json, checkpoint.pt, model.pt)"),
        ([f"hydra.run.dir={finished_run}", f"resume={finished_run}", "trainer.epochs=1"], "already holds another run"),
        (["-m", f"hydra.sweep.dir={finished_run}", "gamma=0,1"], "already holds another sweep (.hydra/"),
        (["-m", f"hydra.sweep.dir={sweep}", "gamma=0,1"], "already holds another sweep (0_gamma=0/)"),
    ]
    for args, needle in cases:
        r = run_py(*args, "experiment=smoke")
        line = one_error_line(r.stderr)
        assert r.returncode == 2 and needle in line and "choose a new directory" in line, r.stderr
    assert snapshot(finished_run) == before  # byte for byte, .hydra/*.yaml included
    assert sorted(os.listdir(sweep)) == ["0_gamma=0"]


def test_runs_started_in_the_same_second_get_directories_of_their_own(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fixed = "hydra.run.dir=outputs/${now:%Y}/same"  # a time stamp that two runs share
    first = launch.prepare(["experiment=smoke", fixed])
    second = launch.prepare(["experiment=smoke", fixed])
    year = __import__("datetime").datetime.now().year
    assert first[-1] == f"hydra.run.dir='outputs/{year}/same'"
    assert second[-1] == f"hydra.run.dir='outputs/{year}/same-1'"
    assert sorted(os.listdir(tmp_path / "outputs" / str(year))) == ["same", "same-1"]
    # a directory named without a time stamp is never renamed: the second run is refused
    launch.prepare(["experiment=smoke", "hydra.run.dir=mine"])
    code, err = preflight(capsys, "experiment=smoke", "hydra.run.dir=mine")
    assert code == 2 and "hydra.run.dir=mine already holds another run (.hydra/)" in err


def test_job_folders_may_be_named_by_the_group_choices(tmp_path, monkeypatch):
    # what sweeps/cpu_converged.sh does: ${hydra:runtime.choices.method} in the job folder's name
    monkeypatch.chdir(tmp_path)
    argv = launch.prepare(["-m", "experiment=smoke", "method=uniform,sss", "target_flops=0.5", "seed=0,1",
                           "hydra.sweep.dir=sweep", "hydra.sweep.subdir=${hydra:runtime.choices.method}_s${seed}"])
    assert os.listdir(tmp_path) == ["sweep"], argv


def test_claimed_directory_names_survive_hydra_quoting():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from omegaconf import OmegaConf

    for odd in ["/tmp/a b,c=d'e", "/tmp/x${now:%Y}", "/tmp/back\\slash", "/tmp/[1,2]", "/tmp/q\\'", "/tmp/end\\"]:
        ov = OverridesParser.create().parse_override(f"hydra.run.dir={quote(odd)}")
        assert OmegaConf.create({"d": ov.value()}).d == odd and not ov.is_sweep_override()


# ------------------------------------------------------------------ the three tools

def tool(capsys, main, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    return code, err


def with_meta(src, dst, **changes):
    """A copy of a compact.pt2 with other metadata (None removes a key)."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("/extra/meta.json"):
                meta = json.loads(data)
                for k, v in changes.items():
                    meta.pop(k, None) if v is None else meta.__setitem__(k, v)
                data = json.dumps(meta).encode()
            zout.writestr(item, data)


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory, finished_run):
    d = tmp_path_factory.mktemp("odd")
    # files as written before the data set section was kept (data=None), then one as written now
    with_meta(finished_run / "compact.pt2", d / "cifar.pt2", dataset="cifar100", data=None)  # 10 outputs
    with_meta(finished_run / "compact.pt2", d / "old.pt2", synthetic=None, data=None)
    with_meta(finished_run / "compact.pt2", d / "imagenet.pt2", dataset="imagenet", data=None)
    cifar = {"name": "cifar100", "root": str(d / "nowhere"), "download": False, "batch_size": 128,
             "eval_batch_size": 500, "train_size": None, "test_size": None, "val_size": 0, "pad": 4, "flip": True}
    with_meta(finished_run / "compact.pt2", d / "cifar_now.pt2", dataset="cifar100", data=cifar)
    (d / "small").mkdir()
    x = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8).numpy()
    __import__("numpy").savez(d / "small" / "cifar100.npz", x_train=x, y_train=[0, 1, 2, 3], x_test=x, y_test=[0, 1, 2, 3])
    (d / "corrupt" / "run").mkdir(parents=True)
    (d / "corrupt" / "run" / "results.json").write_text("{not json")
    (d / "oddtypes" / "run").mkdir(parents=True)
    (d / "oddtypes" / "run" / "results.json").write_text(json.dumps({"metrics": "abc", "gates": 5}))
    (d / "garbage.pt").write_bytes(b"not a torch file")
    torch.save({"a": 1}, d / "foreign.pt")
    torch.save({"a": 1}, d / "foreign.pt2")  # a zip, but not torch.export's
    (d / "a_file").write_text("x")
    (d / "empty").mkdir()
    (d / "no_model").mkdir()
    torch.save({"a": 1}, d / "no_model" / "model.pt")
    (d / "bad_model").mkdir()
    (d / "bad_model" / "model.pt").write_bytes(b"\x00" * 10)
    (d / "npzdir" / "cifar100.npz").mkdir(parents=True)  # a folder named as the archive
    (d / "loop").mkdir()
    os.symlink("cifar100.npz", d / "loop" / "cifar100.npz")  # a link to itself
    program = torch.export.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),))
    torch.export.save(program, d / "plain.pt2")  # a torch.export file without our metadata
    return d


def prune_cases(run, odd):
    return [
        ([], "the following arguments are required: run_dir"),
        ([run, "--target-flops"], "argument --target-flops: expected one argument"),
        ([run, "--threshold", "abc"], "--threshold 'abc' is not a number"),
        ([run, "--threshold", "-1"], "--threshold -1 must be >= 0"),
        ([run, "--threshold", "nan"], "--threshold nan must be a finite number"),
        ([run, "--threshold", "inf"], "--threshold inf must be a finite number"),
        ([run, "--threshold", "0", "--round-to", "0"], "--round-to 0 must be >= 1"),
        ([run, "--threshold", "0", "--round-to", "1.5"], "--round-to 1.5 is not an integer"),
        ([run, "--threshold", "0", "--round-to", "x"], "--round-to 'x' is not an integer"),
        ([run, "--threshold", "0", "--nope"], "unrecognized arguments: --nope"),
        ([odd / "nowhere", "--threshold", "0"], "nowhere: no such folder"),
        ([odd / "a_file", "--threshold", "0"], "a_file is a file, not a folder"),
        ([odd / "empty", "--threshold", "0"], "model.pt not found: give the directory of a finished run"),
        ([odd / "no_model", "--threshold", "0"], "is not a model.pt written by a run"),
        ([odd / "bad_model", "--threshold", "0"], "is not a readable model.pt"),
        ([run, "--threshold", "0", "--device", "tpu"], "device='tpu' is not a device"),
        ([run, "--threshold", "0", "--device", "cuda:7"], "device='cuda:7'"),
        ([run, "--threshold", "0", "--data-root", odd / "nowhere"], "--data-root"),
        ([run, "--threshold", "0", "--out", run], "exists already; pass another --out"),
        ([run, "--threshold", "0", "--out", "/etc/hostname/out"], "cannot write there"),
        ([run, "--target-flops", "0"], "--target-flops 0 is outside (0, 1]"),
        ([run, "--target-flops", "nan"], "--target-flops nan must be a finite number"),
        ([run, "--target-flops", "0.5", "--criterion", "random"], "argument --criterion: invalid choice"),
        ([run, "--criterion", "l1norm"], "--criterion ranks channels for --target-flops"),
        ([run, "--finetune-epochs", "-1"], "--finetune-epochs -1 must be >= 0"),
        ([run, "--finetune-epochs", "0.5"], "--finetune-epochs 0.5 is not an integer"),
        ([run, "--finetune-lr", "0"], "--finetune-lr 0 must be > 0"),
        # flags that make no sense together (issue 16)
        ([run, "--target-flops", "0.5", "--round-to", "8"],
         "--round-to shapes a cut of the zero gates; --target-flops sets the widths itself"),
        ([run, "--target-flops", "0.5", "--threshold", "0.1"], "--threshold shapes a cut of the zero gates"),
        ([run, "--finetune-lr", "0.1"], "--finetune-lr is the learning rate of fine-tuning: give --finetune-epochs N"),
        ([run, "--threshold", "0", "--data-root", odd / "a_file"], "a_file is a file, not a folder"),
        ([run, "--rounds", "2"], "--rounds and --round-epochs shape a cut to --target-flops"),
        ([run, "--target-flops", "0.5", "--round-epochs", "2"], "--round-epochs is the fine-tuning between rounds"),
        ([run, "--target-flops", "0.5", "--rounds", "0"], "--rounds 0 is outside [1, 100]"),
    ]


def evaluate_cases(run, odd):
    c = run / "compact.pt2"
    return [
        ([], "the following arguments are required: compact"),
        ([odd / "nowhere.pt2"], "nowhere.pt2 not found"),
        ([odd / "empty"], "compact.pt2 not found"),
        ([odd / "garbage.pt"], "garbage.pt: not a compact network (a torch.export .pt2 archive"),
        ([odd / "foreign.pt"], "foreign.pt: not a compact network"),
        ([odd / "foreign.pt2"], "foreign.pt2: not a compact network"),
        ([odd / "plain.pt2"], "without gated_pruning's metadata"),
        ([c, "--test-size", "0"], "--test-size 0 must be >= 1"),
        ([c, "--test-size", "abc"], "--test-size 'abc' is not an integer"),
        ([c, "--test-size", "100000"], "--test-size=100000 is larger than the data set (256 images)"),
        ([c, "--batch-size", "0"], "--batch-size 0 must be >= 1"),
        ([c, "--batch-size", "2.5"], "--batch-size 2.5 is not an integer"),
        ([c, "--seed", "-1"], "--seed -1 is outside"),
        ([c, "--seed", "x"], "--seed 'x' is not an integer"),
        ([c, "--nope"], "unrecognized arguments: --nope"),
        ([odd / "cifar.pt2", "--data-root", odd / "nowhere"], "cifar100 not found under"),
        ([odd / "cifar.pt2", "--data-root", odd / "small"], "outputs shape (4, 10) per batch, but cifar100 has 100 classes"),
        ([odd / "old.pt2"], "was trained on synthetic data by an older version"),
        ([odd / "imagenet.pt2"], "unknown data set 'imagenet'"),
        ([odd / "cifar_now.pt2"], "cifar100 not found under"),  # where the run read it: gone
        ([odd / "cifar_now.pt2", "--data-root", odd / "small"], "outputs shape (4, 10) per batch, but cifar100 has "
                                                                "100 classes"),
        # the data root named by the tool's own flag, and what is wrong with the archive (issue 16)
        ([odd / "cifar.pt2", "--data-root", odd / "small" / "cifar100.npz"], "--data-root='"),
        ([odd / "cifar.pt2", "--data-root", odd / "npzdir"], "cifar100.npz is a folder, not a file"),
        ([odd / "cifar.pt2", "--data-root", odd / "loop"], "cifar100.npz is a symbolic link that leads back to itself"),
    ]


def report_cases(run, odd):
    return [
        ([], "the following arguments are required: dir"),
        ([odd / "nowhere"], "nowhere: no such folder"),
        ([odd / "a_file"], "a_file is a file, not a folder"),
        ([odd / "empty"], "no results.json found under"),
        ([run, "--out", odd / "a_file"], "a_file is a file, not a folder"),
        ([run, "--out", "/etc/hostname/out"], "cannot write there"),
        ([run, "--nope"], "unrecognized arguments: --nope"),
        ([odd / "corrupt"], "no readable results.json under"),
        ([odd / "oddtypes"], "no readable results.json under"),
    ]


@pytest.mark.parametrize("name,main,cases", [("reprune", reprune.main, prune_cases),
                                             ("evaluate", evaluate.main, evaluate_cases),
                                             ("report", sweep.main, report_cases)])
def test_every_bad_tool_input_is_one_line_and_writes_nothing(name, main, cases, finished_run, odd_files, capsys):
    before, odd_before = snapshot(finished_run), snapshot(odd_files)
    for argv, needle in cases(finished_run, odd_files):
        code, err = tool(capsys, main, *argv)
        assert code == 2 and needle in one_error_line(err), (argv, err)
        assert "dataset.root" not in err  # a key the tools do not have
    assert snapshot(finished_run) == before and snapshot(odd_files) == odd_before


def test_the_compact_network_of_a_synthetic_run_evaluates(finished_run, capsys):
    res = json.load(open(finished_run / "results.json"))
    for target in (finished_run / "compact.pt2", finished_run):  # a run directory: its compact.pt2
        assert evaluate.main([str(target)]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["examples"] == 256 and got["top1"] == pytest.approx(res["prune"]["test"]["compact"]["top1"])


def test_report_skips_an_unreadable_results_json_with_a_warning(finished_run, odd_files, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(odd_files / "corrupt", mixed / "corrupt")
    (mixed / "good").mkdir()
    shutil.copy(finished_run / "results.json", mixed / "good" / "results.json")
    code, err = tool(capsys, sweep.main, mixed)
    assert code == 0 and "warning: skipping" in err and "corrupt/run/results.json" in err
    assert (mixed / "report" / "report.md").read_text().count("| good |") == 1


def test_a_failing_or_stopped_tool_leaves_no_partial_output(finished_run, tmp_path, monkeypatch, capsys):
    from gated_pruning.errors import Interrupted

    out = tmp_path / "deep" / "out"

    save = pruning.save_compact

    def save_then_stop(*args):  # compact.pt2 is written, prune.json not yet
        save(*args)
        raise Interrupted("SIGINT")
    monkeypatch.setattr(pruning, "save_compact", save_then_stop)
    code, err = tool(capsys, reprune.main, finished_run, "--threshold", "0.5", "--out", out)
    assert code == 130 and "stopped by SIGINT; nothing was written" in one_error_line(err)
    assert os.listdir(tmp_path) == []  # no out/, no deep/, no temporary folder

    def stop(*args):
        raise Interrupted("SIGINT")
    monkeypatch.setattr(sweep, "markdown_report", stop)  # after the plots
    code, err = tool(capsys, sweep.main, finished_run, "--out", out)
    assert code == 130 and os.listdir(tmp_path) == []
