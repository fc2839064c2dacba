"""A compact network as a file that torch alone can load: `compact.pt2`, a torch.export program
with the metadata (`meta.json`) that `python -m gated_pruning.evaluate` needs to evaluate it on
its own: the data set, its normalization, the test subset and, for synthetic data, what
re-creates it. Beside it, for deployment, `compact.onnx` (`prune.onnx=true`): the same program
in ONNX (opset of torch's exporter, a dynamic batch dimension), which onnxruntime runs.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import logging
import os
import zipfile

import torch
from omegaconf import OmegaConf

from gated_pruning.errors import UserError
from gated_pruning.runtime import write_bytes
from gated_pruning.toolkit import intact, one_line

COMPACT_FILE = "compact.pt2"
ONNX_FILE = "compact.onnx"
ONNX_PACKAGES = ("onnx", "onnxscript")  # torch's exporter needs both (pip install -e '.[deploy]')


def compact_meta(cfg, result: dict, test_top1: float, described) -> dict:
    """The metadata of the compact network pruned by `result` (see `pruning.prune_and_measure`)
    from a run of config `cfg` on the data set `described` (`datasets.Described`); `test_top1`:
    its test accuracy (fine-tuned, if it was). `data` and `seed` are everything `evaluate` needs to
    make the run's test set again (its subset, the images held out, a synthetic set's draw, a
    folder's transforms)."""
    data = OmegaConf.to_container(cfg.dataset, resolve=True)
    if data.get("root"):
        data["root"] = os.path.abspath(os.path.expanduser(str(data["root"])))
    return {"dataset": described.name, "mean": list(described.mean), "std": list(described.std),
            "image_size": described.image_size, "num_classes": described.num_classes,
            "data": data, "seed": cfg.seed,
            "widths": result["compact"]["widths"], "threshold": result["threshold"], "test_top1": test_top1}


def exported(model):
    """`model` as a torch.export program on the CPU, in eval mode, with a dynamic batch size."""
    model = copy.deepcopy(model).cpu().eval()
    x = torch.zeros(2, model.in_channels, model.input_size, model.input_size)
    return torch.export.export(model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})


def onnx_missing() -> str | None:
    """Which package ONNX export lacks here, or None."""
    return next((p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None), None)


def onnx_bytes(program) -> bytes:
    """The ONNX model of a torch.export program (torch's exporter; its progress lines silenced):
    input `x`, output `logits`, the batch dimension dynamic."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [g.level for g in loggers]
    try:  # its passes log each step at INFO, which a Hydra job would print
        for g in loggers:
            g.setLevel(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()):
            onnx_program = torch.onnx.export(program, dynamo=True, verbose=False, input_names=["x"],
                                             output_names=["logits"])
    finally:
        for g, level in zip(loggers, levels):
            g.setLevel(level)
    return onnx_program.model_proto.SerializeToString()


def save_compact(model, path: str, meta: dict, onnx_path: str | None = None) -> None:
    """Save as a torch.export program, on the CPU: loadable with torch alone (no gated_pruning,
    no Hydra) on any machine; `.to(device)` the loaded module to run it elsewhere; and, given
    `onnx_path`, the same program as ONNX there. Each file is built in memory and written by
    Python, whole: a full disk is an OSError (torch's own writer aborts the interpreter there)."""
    program = exported(model)
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={"meta.json": json.dumps(meta)})
    write_bytes(buffer.getvalue(), path)
    if onnx_path is not None:
        write_bytes(onnx_bytes(program), onnx_path)


def load_compact(path: str):
    """(callable module, meta) from a file written by `save_compact`; a one-line UserError for
    anything else (torch.export.load logs a traceback before it fails on a foreign file)."""
    if not _is_pt2_archive(path):
        raise UserError(f"{path}: not a compact network (a torch.export .pt2 archive, as written by a run "
                        "or by gated_pruning.reprune)")
    intact(path, "; prune the run again for a new one (python -m gated_pruning.reprune RUN_DIR)")
    extra = {"meta.json": ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{path}: not a readable compact network ({type(e).__name__}: "
                        f"{one_line(e, 160)})") from None
    try:
        meta = json.loads(extra["meta.json"])
        meta["dataset"], meta["mean"], meta["std"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: a torch.export program without gated_pruning's metadata (meta.json); "
                        "evaluate it with torch.export.load(path).module()") from None
    return program.module(), meta


def _is_pt2_archive(path: str) -> bool:
    """A zip archive in torch.export's layout, named .pt2."""
    if not path.endswith(".pt2") or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("archive_format") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
