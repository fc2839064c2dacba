"""Experiment tracking behind one small interface: `log`, `summary`, `finish`.

`WandbTracker` logs to Weights & Biases; without an API key (or when the server cannot be
reached) it falls back to offline mode by itself and says so in one line. `TensorboardTracker`
writes the same scalars and gate histograms as TensorBoard event files (torch's own
`SummaryWriter`), the summary as TensorBoard's hparams (the config's scalars against the final
numbers, so runs compare side by side). A tracker failure never stops training: after one
warning the tracker turns into a no-op. `NullTracker` does nothing.
"""
from __future__ import annotations

import os
import sys

from omegaconf import OmegaConf

from gated_pruning.config.keys import flatten


class NullTracker:
    run_id = None
    run_dir = None
    histograms = False  # the trainer copies no gate histogram to the host for it

    def log(self, metrics: dict, step: int | None = None, histograms: dict | None = None) -> None:
        pass

    def summary(self, values: dict) -> None:
        pass

    def line_series(self, key: str, xs: list, series: dict, title: str, xname: str) -> None:
        pass

    def finish(self) -> None:
        pass


def _say(msg: str) -> None:
    print(f"wandb: {msg}", file=sys.stderr)


def _has_api_key(wandb) -> bool:
    try:
        return bool(wandb.login(prompt=False, verify=False))
    except Exception:  # noqa: BLE001 - a broken netrc or settings file: treat as no key
        return False


class WandbTracker:
    def __init__(self, project: str, config: dict, *, name: str | None = None,
                 group: str | None = None, tags=None, mode: str | None = None,
                 entity: str | None = None, dir: str | None = None, run_id: str | None = None,
                 init_timeout: float = 30.0):
        self.run = None
        self.run_id = None
        self.run_dir = None
        try:
            import wandb
        except Exception as e:  # noqa: BLE001
            _say(f"cannot import wandb ({e}); not logging")
            return
        self._wandb = wandb
        mode = mode or os.environ.get("WANDB_MODE") or "online"
        if mode == "online" and not _has_api_key(wandb):
            mode = "offline"
            _say("no API key found: logging offline; upload later with `wandb sync <run dir>/wandb/offline-run-*`")
        kwargs = dict(project=project, entity=entity, name=name, group=group, tags=list(tags or []),
                      config=config, dir=dir, reinit="finish_previous",
                      id=run_id, resume="allow" if run_id else None,
                      settings=wandb.Settings(init_timeout=init_timeout, console="off"))
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except Exception as e:  # noqa: BLE001 - unreachable server, bad entity, ...
            if mode != "online":
                _say(f"init failed ({type(e).__name__}: {e}); not logging")
                return
            _say(f"cannot reach the server ({type(e).__name__}); logging offline, "
                 "upload later with `wandb sync`")
            try:
                self.run = wandb.init(mode="offline", **kwargs)
            except Exception as e2:  # noqa: BLE001
                _say(f"offline init failed too ({type(e2).__name__}: {e2}); not logging")
                return
        self.run_id = self.run.id
        self.run_dir = getattr(self.run, "dir", None)
        try:  # a line per layer over steps: the natural axis for gate counts
            self.run.define_metric("epoch")
            self.run.define_metric("test/*", step_metric="epoch")
        except Exception:  # noqa: BLE001
            pass

    def _guard(self, what, fn):
        if self.run is None:
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - logging must never stop training
            _say(f"{what} failed ({type(e).__name__}: {e}); logging disabled for this run")
            self.run = None

    def log(self, metrics: dict, step: int | None = None, histograms: dict | None = None) -> None:
        """`histograms`: {key: array of values}, logged as W&B histograms with the metrics."""
        def log():
            extra = {k: self._wandb.Histogram(v) for k, v in (histograms or {}).items()}
            self.run.log({**metrics, **extra}, step=step)
        self._guard("log", log)

    def summary(self, values: dict) -> None:
        self._guard("summary", lambda: self.run.summary.update(values))

    def line_series(self, key: str, xs: list, series: dict, title: str, xname: str) -> None:
        """One chart with a line per series (e.g. per layer) over `xs`."""
        plot = lambda: self._wandb.plot.line_series(  # noqa: E731
            xs=xs, ys=list(series.values()), keys=list(series), title=title, xname=xname)
        self._guard("line_series", lambda: self.run.log({key: plot()}))

    def finish(self) -> None:
        self._guard("finish", lambda: self.run.finish())
        self.run = None


class TensorboardTracker:
    """Event files in `log_dir` (`tensorboard --logdir outputs` compares runs). A resumed run
    purges what the stopped one wrote after the step it resumes from."""

    run_id = None

    def __init__(self, log_dir: str, config: dict, step: int = 0):
        self.run_dir, self.config, self.values, self.writer = log_dir, config, {}, None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir, purge_step=step or None)
        except Exception as e:  # noqa: BLE001 - tensorboard not installed, an unwritable folder
            print(f"tensorboard: cannot write event files ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                  "not logging (pip install tensorboard)", file=sys.stderr)

    def _guard(self, what, fn):
        if self.writer is None:
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - logging must never stop training
            print(f"tensorboard: {what} failed ({type(e).__name__}: {e}); logging disabled for this run",
                  file=sys.stderr)
            self.writer = None

    def log(self, metrics: dict, step: int | None = None, histograms: dict | None = None) -> None:
        def log():
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, step)
            for k, v in (histograms or {}).items():
                self.writer.add_histogram(k, v, step)
        self._guard("log", log)

    def summary(self, values: dict) -> None:
        self.values.update(values)

    def line_series(self, key: str, xs: list, series: dict, title: str, xname: str) -> None:
        pass  # the per-layer scalars (gates_zero_frac/LAYER) are that chart in TensorBoard

    def finish(self) -> None:
        def hparams():
            params = {k: v for k, v in self.config.items() if isinstance(v, (int, float, str, bool))}
            metrics = {k: v for k, v in self.values.items() if isinstance(v, (int, float))}
            self.writer.add_hparams(params, metrics, run_name=".")
            self.writer.close()
        self._guard("finish", hparams)
        self.writer = None


def tracker_config(cfg, choices: dict | None = None) -> dict:
    """The run config as a tracker sees it: flat dotted keys (`optimizer.lr`, as a W&B sweep
    names its parameters) plus each config group's chosen option (`optimizer: apg`, as a sweep
    over group options sets it), so sweep values and logged config never collide."""
    out = flatten(OmegaConf.to_container(cfg, resolve=True))
    out.update({k: v for k, v in (choices or {}).items() if v is not None and not k.startswith("hydra")})
    return out


def build_tracker(cfg, config: dict, name: str | None, run_dir: str, group: str | None = None,
                  run_id: str | None = None, step: int = 0):
    """A tracker from the `logger` config group (`wandb`, `tensorboard` or `none`); `step`: where
    a resumed run starts."""
    if cfg.name == "none":
        return NullTracker()
    if cfg.name == "tensorboard":
        return TensorboardTracker(os.path.join(run_dir, cfg.get("subdir") or "tensorboard"), config, step)
    if cfg.name != "wandb":
        raise ValueError(f"logger.name={cfg.name!r} is not one of wandb, tensorboard, none")
    return WandbTracker(cfg.project, config, name=name, group=cfg.group or group, tags=cfg.tags,
                        mode=cfg.mode, entity=cfg.entity, dir=run_dir, run_id=run_id,
                        init_timeout=cfg.init_timeout)
