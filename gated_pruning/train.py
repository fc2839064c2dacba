"""The training loop: epochs of steps, evaluation, checkpoints, exact resume (the gate statistics it
keeps and logs are `gatelog.py`'s).

One loop serves the gated network (weights by SGD, gates by APG or GateSGD, a penalty on the
gates, optionally a FLOPs budget that sets the penalty's strength) and the fine-tuning of a pruned
network (no gate optimizer). Nothing in a step reads a value back to the host: the loss, accuracy,
the first non-finite step and the budget's state stay on the device and are read at log time.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

import torch
import torch.nn.functional as F

from gated_pruning import checkpoint, distributed
from gated_pruning.checkpoint import Preempted, rng_state, set_rng_state
from gated_pruning.errors import CheckpointError, ConfigError, Diverged, StopRequest
from gated_pruning.gatelog import GateLog


class Trainer:
    def __init__(self, model, train_loader, test_loader, opt_w, sched_w, cfg, *, val_loader=None,
                 opt_g=None, sched_g=None, penalty=None, budget=None, tracker=None, run_dir=".",
                 fingerprint=None, eps=1e-3, log_prefix="", step_offset=0):
        self.model, self.train_loader, self.test_loader = model, train_loader, test_loader
        self.val_loader = val_loader  # with one, epochs are judged on it and test is read once, at the end
        self.opt_w, self.sched_w, self.opt_g, self.sched_g = opt_w, sched_w, opt_g, sched_g
        self.penalty, self.budget = penalty, budget
        self.cfg, self.tracker, self.run_dir = cfg, tracker, run_dir
        self.fingerprint = fingerprint or {}
        self.resumable = fingerprint is not None  # a stop signal saves a checkpoint to resume from
        self.prefix = log_prefix
        self.step_offset = step_offset  # added to the step reported to the tracker
        self.device = train_loader.device
        self.gates = GateLog(model, opt_g, penalty, eps)
        self.epoch, self.batch, self.step = 0, 0, 0
        self.curve: list[dict] = []  # one row per epoch: train loss/top-1, and val or test
        self.metrics, self.extra_state = {}, {}
        self.stop = StopRequest(announce=distributed.is_main())
        self.running = Running(self.device)
        self.forward_model = model  # what the training step calls: DDP and/or compiled
        if distributed.world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if cfg.get("compile"):
            self.forward_model = torch.compile(self.forward_model, dynamic=False)  # one shape a run: no dynamic recompiles

    # -- views ---------------------------------------------------------------------------------
    def gate_record(self) -> dict | None:
        """The gate statistics now (`GateLog.record`)."""
        return self.gates.record(self.step, self.step / len(self.train_loader), self.budget)

    def evaluate(self, model=None, split: str = "test") -> dict:
        """Loss, top-1, top-5 on the `split` set ("test" or "val") of the trained network (gates
        as trained), or of `model`. Always in float32, whatever `amp` does to training steps."""
        model = model or self.model
        loader = self.val_loader if split == "val" else self.test_loader
        with self.gates.view() if model is self.model else contextlib.nullcontext():
            return evaluate(model, loader, self._layout)

    # -- the loop ---------------------------------------------------------------------------
    def _layout(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def _autocast(self):
        """bf16 autocast of the training forward (`amp`), on CUDA and on CPUs (oneDNN)."""
        if self.cfg.amp and self.device.type in ("cuda", "cpu"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _check_finite(self) -> None:
        bad = int(self.running.first_bad.item())
        if bad >= 0:
            raise Diverged(f"{self._what()} loss became NaN or infinite at step {bad} (epoch "
                           f"{bad // len(self.train_loader)}); {self._remedy()}")

    def _what(self) -> str:
        return {"": "training", "finetune/": "fine-tuning", "round/": "fine-tuning between rounds"}.get(
            self.prefix, self.prefix.rstrip("/"))

    def _remedy(self) -> str:
        """What to change after a divergence, and the checkpoint to go on from where one exists."""
        lr = self.opt_w.param_groups[0].get("initial_lr", self.opt_w.param_groups[0]["lr"])
        if self.prefix:  # fine-tuning a pruned network: its own lr, no checkpoint of its own
            return f"lower prune.finetune_lr (it is {lr:g}); the trained network is in model.pt"
        path = self.checkpoint_path()
        saved = f"; the last good checkpoint is {path}" if os.path.isfile(path) else "; no checkpoint was saved yet"
        return f"lower optimizer.lr (it is {lr:g}) or gamma" + saved

    def _train_step(self, x, y):
        with self._autocast():
            out = self.forward_model(self._layout(x))
            loss = F.cross_entropy(out.float(), y, label_smoothing=self.cfg.get("label_smoothing", 0.0))
        smooth = self.penalty.loss() if self.penalty is not None else None
        self.opt_w.zero_grad(set_to_none=True)
        if self.opt_g is not None:
            self.opt_g.zero_grad(set_to_none=True)
        (loss if smooth is None else loss + smooth).backward()
        self.opt_w.step()
        self.sched_w.step()
        if self.opt_g is not None:
            self.opt_g.step(l1=self.penalty.l1() if self.penalty is not None else None)
            self.sched_g.step()
        if self.budget is not None:
            self.budget.update(self.step + 1)  # the step being finished
        self.running.add(loss.detach(), out.detach(), y)

    def fit(self) -> dict:
        cfg = self.cfg
        steps_per_epoch = len(self.train_loader)
        if steps_per_epoch == 0:
            raise ConfigError(f"the training set ({self.train_loader.num_examples} examples) is "
                             f"smaller than dataset.batch_size={self.train_loader.batch_size}")
        self.model.train()
        clock = (self.step, time.perf_counter())  # where the time estimate starts counting
        with self.stop.handled() if self.resumable else contextlib.nullcontext():
            while self.epoch < cfg.epochs:
                batches = self.train_loader.epoch(self.epoch, self.batch)
                bar = _progress(batches, total=steps_per_epoch, initial=self.batch,
                                desc=f"{self.prefix}epoch {self.epoch + 1}/{cfg.epochs}",
                                enabled=cfg.progress and distributed.is_main())
                for x, y in bar:
                    self._train_step(x, y)
                    self.step += 1
                    self.batch += 1
                    if self.step - clock[0] == ETA_AFTER and not self.prefix and distributed.is_main():
                        line = eta_line((time.perf_counter() - clock[1]) / ETA_AFTER,
                                        cfg.epochs * steps_per_epoch - self.step, cfg.epochs, self.device)
                        if line:
                            print(line, file=sys.stderr, flush=True)
                    if cfg.log_every and self.step % cfg.log_every == 0:
                        self._log_train(bar)
                    if cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0:
                        self._check_finite()
                        self.save_checkpoint()
                    if self.resumable and self._stop_requested():
                        self._stop()
                self._end_epoch()
                if self.resumable and self._stop_requested():
                    self._stop()
            if self.resumable and self._stop_requested(agree=True):  # the last step's signal
                self._stop()
        if not self.metrics:  # nothing trained (trainer.epochs=0: trained weights, evaluated, then cut)
            self.metrics = {"epoch": 0, "step": 0}
            if self.val_loader is not None:
                self.metrics["val"] = self.evaluate(split="val")
        if "test" not in self.metrics:  # with a validation split, test is read once, at the end
            self.metrics["test"] = self.evaluate()
        return self.metrics

    def _stop(self):
        self._check_finite()
        path = self.save_checkpoint()
        raise Preempted(path, self.stop.name)

    def _log_train(self, bar=None) -> None:
        self._check_finite()
        loss, _ = self.running.mean()
        metrics = {f"{self.prefix}train/loss": loss, f"{self.prefix}lr": self.opt_w.param_groups[0]["lr"],
                   f"{self.prefix}epoch": self.step / len(self.train_loader)}
        keys, histograms = self.gates.keep(self.gate_record(), self.prefix, self._wants_histograms())
        metrics.update(keys)
        if bar is not None and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss:.3f}")
        if self.tracker is not None:
            self.tracker.log(metrics, step=self.step + self.step_offset, histograms=histograms)

    def _end_epoch(self) -> None:
        self._check_finite()
        loss, top1 = self.running.mean()
        train = {"loss": loss, "top1": top1}
        split = "val" if self.val_loader is not None else "test"
        last = self.epoch + 1 == self.cfg.epochs
        judged = self.evaluate(split=split) if last or (self.epoch + 1) % self._every("eval_every") == 0 else None
        self.epoch += 1
        self.batch = 0
        self.running.reset()
        self.metrics = {"epoch": self.epoch, "step": self.step, "train": train,
                        **({split: judged} if judged else {k: v for k, v in self.metrics.items() if k == split})}
        row = {"epoch": self.epoch, "step": self.step, "train_loss": train["loss"], "train_top1": train["top1"]}
        if judged:
            row.update({f"{split}_loss": judged["loss"], f"{split}_top1": judged["top1"]})
        self.curve.append(row)
        metrics = {f"{self.prefix}train/epoch_loss": train["loss"],
                   f"{self.prefix}train/epoch_top1": train["top1"],
                   **{f"{self.prefix}{split}/{k}": v for k, v in (judged or {}).items()},
                   f"{self.prefix}epoch": self.epoch}
        rec = self.gate_record()
        if rec is not None and judged:
            rec[f"{split}_top1"] = judged["top1"]
        keys, histograms = self.gates.keep(rec, self.prefix, self._wants_histograms())
        metrics.update(keys)
        if self.tracker is not None:
            self.tracker.log(metrics, step=self.step + self.step_offset, histograms=histograms)
        if distributed.is_main():  # also with progress=false: the run's record in run.log
            said = (f" {split} loss {judged['loss']:.4f} top1 {judged['top1']:.4f} top5 {judged['top5']:.4f}"
                    if judged else f" (not evaluated: trainer.eval_every={self._every('eval_every')})")
            print(f"{self.prefix}epoch {self.epoch}: train loss {train['loss']:.4f}{said}", file=sys.stderr)
        if self.cfg.checkpoint and (last or self.epoch % self._every("checkpoint_every_epochs") == 0):
            self.save_checkpoint()

    def _every(self, key: str) -> int:
        return int(self.cfg.get(key) or 1)

    def _wants_histograms(self) -> bool:
        """Gate histograms are copied to the host only for a tracker that keeps them."""
        return self.tracker is not None and getattr(self.tracker, "histograms", True)

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint_path(self) -> str:
        return os.path.join(self.run_dir, self.prefix.replace("/", "_") + checkpoint.FILENAME)

    def state_dict(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "model": self.model.state_dict(),
            "opt_w": self.opt_w.state_dict(), "sched_w": self.sched_w.state_dict(),
            "opt_g": self.opt_g.state_dict() if self.opt_g is not None else None,
            "sched_g": self.sched_g.state_dict() if self.sched_g is not None else None,
            "rng": rng_state(self.device),
            "epoch": self.epoch, "batch": self.batch, "step": self.step,
            **self.gates.state_dict(), "curve": self.curve, "metrics": self.metrics,
            "running": self.running.state_dict(),
            "budget": self.budget.state_dict() if self.budget is not None else None,
            "extra": self.extra_state,
        }

    def save_checkpoint(self) -> str:
        """Write the full training state atomically (rank 0); a non-finite state is never written."""
        tensors = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        if not torch.stack([torch.isfinite(t).all() for t in tensors]).all():
            raise Diverged(f"{self._what()}: weights or BN statistics became NaN or infinite by step {self.step}; "
                           f"{self._remedy()}")
        path = self.checkpoint_path()
        if distributed.is_main():
            checkpoint.save(self.state_dict(), path)
        return path

    def load_state_dict(self, state: dict, path: str = "checkpoint") -> None:
        checkpoint.check_compatible(state.get("fingerprint", {}), self.fingerprint, path)
        try:
            self.model.load_state_dict(state["model"])
            self.opt_w.load_state_dict(state["opt_w"])
            self.sched_w.load_state_dict(state["sched_w"])
            if self.opt_g is not None:
                self.opt_g.load_state_dict(state["opt_g"])
                self.sched_g.load_state_dict(state["sched_g"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(
                f"resume={path}: checkpoint does not match this model/optimizer "
                f"({str(e).splitlines()[0][:200]})") from None
        set_rng_state(state["rng"], self.device)
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.gates.load_state_dict(state)
        self.metrics, self.curve = state["metrics"], state.get("curve", [])
        self.running.load_state_dict(state["running"])
        self.extra_state = state.get("extra", {})
        if self.budget is not None:
            self.budget.load_state_dict(state["budget"])

    def _stop_requested(self, agree: bool = False) -> bool:
        """A stop signal seen (by any rank: agreed at log steps, or epoch ends with log_every=0,
        under data parallelism, so that every rank stops at the same step; `agree`: at a point
        every rank reaches, such as the end of training)."""
        if distributed.world_size() == 1:
            return self.stop.signum is not None
        if not agree and self.step % (self.cfg.log_every or len(self.train_loader)):
            return False
        flag = torch.full((), float(self.stop.signum is not None), device=self.device)
        return distributed.all_reduce_sum(flag).item() > 0


class Running:
    """An epoch's running sums, kept on the device (nothing is read back per step): the loss, the
    correct predictions, the examples seen, and the first step whose loss was not finite."""

    def __init__(self, device):
        self.device = device
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.seen = 0
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.dstep = torch.zeros((), dtype=torch.long, device=device)

    def add(self, loss, out, y) -> None:
        self.first_bad = torch.where(torch.isfinite(loss) | (self.first_bad >= 0), self.first_bad, self.dstep)
        self.dstep += 1
        self.loss_sum += loss * len(y)
        self.correct += (out.argmax(1) == y).sum()
        self.seen += len(y)

    def mean(self) -> tuple[float, float]:
        """(mean train loss, train top-1) since the epoch began, over every rank."""
        t = distributed.all_reduce_sum(torch.stack([
            self.loss_sum.double(), self.correct.double(),
            torch.full((), float(self.seen), dtype=torch.float64, device=self.device)]))
        loss_sum, correct, seen = t.tolist()
        return loss_sum / max(1.0, seen), correct / max(1.0, seen)

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()
        self.seen = 0

    def state_dict(self) -> dict:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "seen": self.seen,
                "first_bad": self.first_bad, "dstep": self.dstep}

    def load_state_dict(self, r: dict) -> None:
        self.loss_sum, self.correct = r["loss_sum"].to(self.device), r["correct"].to(self.device)
        self.seen = r["seen"]
        self.first_bad, self.dstep = r["first_bad"].to(self.device), r["dstep"].to(self.device)


ETA_AFTER = 20  # steps timed before the estimate of the whole run is said (the first are the slowest)
ETA_AT_LEAST = 600  # seconds: a run shorter than this says nothing about its time


def eta_line(seconds_per_step: float, steps_left: int, epochs: int, device) -> str | None:
    """The one line a long run prints after its first steps: how long the rest will take at the
    speed measured, and, on a CPU and over an hour, the preset sized for a CPU; None for a run of
    a few minutes."""
    left = seconds_per_step * steps_left
    if left < ETA_AT_LEAST:
        return None
    hours, minutes = divmod(int(round(left / 60)), 60)
    text = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    line = (f"estimated time: {text} more for {epochs} epochs ({seconds_per_step:.2f} s a step here; "
            "Ctrl-C saves a checkpoint and prints the command that continues)")
    if torch.device(device).type == "cpu" and left > 3600:
        line += ("; on a CPU, experiment=cpu_cifar100 (VGG-16 x0.25, 4 epochs, minutes) and "
                 "experiment=cpu_converged (16 epochs) are the runs sized for one")
    return line


@torch.no_grad()
def evaluate(model, loader, layout=lambda x: x) -> dict:
    """Loss, top-1 and top-5 of `model` (in eval mode, float32: on CUDA with cuDNN's TF32 off, which
    it uses for convs by default) over every batch of `loader`."""
    if loader.device.type == "cuda":
        c = torch.backends.cudnn
        with c.flags(enabled=c.enabled, benchmark=c.benchmark, deterministic=c.deterministic, allow_tf32=False):
            return _evaluate(model, loader, layout)
    return _evaluate(model, loader, layout)


def _evaluate(model, loader, layout) -> dict:
    was_training = model.training
    model.eval()
    device = loader.device
    loss = torch.zeros((), device=device)
    top1 = torch.zeros((), dtype=torch.long, device=device)
    top5 = torch.zeros((), dtype=torch.long, device=device)
    for x, y in loader.epoch():
        out = model(layout(x))
        loss += F.cross_entropy(out.float(), y, reduction="sum")
        hit = out.topk(min(5, out.shape[1]), dim=1).indices == y[:, None]
        top1 += hit[:, 0].sum()
        top5 += hit.any(dim=1).sum()
    model.train(was_training)
    n = loader.num_examples
    return {"loss": loss.item() / n, "top1": top1.item() / n, "top5": top5.item() / n}


def _progress(it, total, initial, desc, enabled):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True,
                file=sys.stderr, mininterval=1.0)
