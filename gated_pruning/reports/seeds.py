"""What a report may say about seeds: mean ± sample std over a row's seeds, and paired
differences (a run minus the reference run of the same seed, the same data order), made only
between runs of one setting (thread count, device, processor): the thread count changes the
reduction order, the processor the bf16 kernels, and by that alone a run moves by up to a point,
so a pair across settings would measure the machine."""
from __future__ import annotations

import statistics


def mean_std(values) -> tuple[float | None, float | None]:
    """(mean, sample std) of the values that are not None; std None below two values."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def setting_label(setting: tuple) -> str:
    """`1 thread (AMD EPYC)`, `8 threads on cuda:0 (NVIDIA H200)`; `unknown` for records without `env`."""
    threads, device, machine = setting
    if threads is None:
        return "unknown (records without env)"
    where = f" on {device}" if device and device != "cpu" else ""
    return f"{threads} thread{'s' if threads != 1 else ''}{where}" + (f" ({short_machine(machine)})" if machine else "")


def short_machine(name: str) -> str:
    """A processor's name without its trademarks: `Intel Xeon`, `AMD EPYC`."""
    for mark in ("(R)", "(TM)", "(tm)", " Processor", " CPU"):
        name = name.replace(mark, "")
    return " ".join(name.split())


def paired(runs: list, refs: list) -> list[dict]:
    """Differences run - reference by seed, one entry per thread setting that has a pair:
    {"setting", "seeds", "test": (mean, std, n), "val": (mean, std, n), "ambiguous"}.
    A seed with two reference runs in one setting pairs with neither (listed in `ambiguous`);
    val pairs only where both runs have a val number."""
    out = []
    for setting in sorted({r.thread_setting for r in runs}, key=_setting_order):
        by_seed = {}
        for ref in refs:
            if ref.thread_setting == setting and ref.seed is not None:
                by_seed.setdefault(ref.seed, []).append(ref)
        ambiguous = sorted(s for s, rs in by_seed.items() if len(rs) > 1)
        pairs = [(r, by_seed[r.seed][0]) for r in runs if r.thread_setting == setting
                 and r.seed in by_seed and r.seed not in ambiguous and r is not by_seed[r.seed][0]]
        if not pairs and not ambiguous:
            continue
        entry = {"setting": setting_label(setting), "seeds": sorted(r.seed for r, _ in pairs), "ambiguous": ambiguous}
        for split, value in (("test", lambda r: r.final), ("val", lambda r: r.final_val)):
            diffs = [value(r) - value(ref) for r, ref in pairs if value(r) is not None and value(ref) is not None]
            entry[split] = (*mean_std(diffs), len(diffs))
        out.append(entry)
    return out


def _setting_order(setting: tuple):
    threads, device, machine = setting
    return (threads is None, threads or 0, device or "", machine or "")
