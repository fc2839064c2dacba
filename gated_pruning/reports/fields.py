"""Typed access to one run record: a field that is absent or null reads as None, and so does one
that is present but of the wrong type or length, which is also noted (`Fields.bad`) so that the
report says which fields of which file it could not read."""
from __future__ import annotations

import json
import math


class Fields:
    """Typed access to one record. A field that is absent or null reads as None; one that is
    present but of the wrong type or length also reads as None, and is noted in `bad`."""

    def __init__(self, res: dict):
        self.res, self.bad = res, []

    def note(self, path: str, problem: str) -> None:
        if not any(path == p or path.startswith(p + ".") for p, _ in self.bad):
            self.bad.append((path, problem))

    def get(self, path: str):
        d, walked = self.res, []
        for key in path.split("."):
            if d is None:
                return None
            if not isinstance(d, dict):
                self.note(".".join(walked), f"is {brief(d)}, not an object")
                return None
            walked.append(key)
            d = d.get(key)
        return d

    def obj(self, path: str) -> dict | None:
        v = self.get(path)
        if v is None or isinstance(v, dict):
            return v
        self.note(path, f"is {brief(v)}, not an object")
        return None

    def number(self, path: str, integer: bool = False) -> float | None:
        v = self.get(path)
        if v is None:
            return None
        if finite(v) is None or (integer and v != int(v)):
            self.note(path, f"is {brief(v)}, not {'an integer' if integer else 'a finite number'}")
            return None
        return int(v) if integer else float(v)

    def text(self, path: str, choices=None) -> str | None:
        v = self.get(path)
        if v is None:
            return None
        if not isinstance(v, str) or (choices and v not in choices):
            self.note(path, f"is {brief(v)}, not " + (f"one of {', '.join(choices)}" if choices else "text"))
            return None
        return v

    def numbers(self, path: str, length: int | None = None, of: str = "") -> list | None:
        """A list of finite numbers (of `length` entries when given: `of` says whose length)."""
        v = self.get(path)
        if v is None:
            return None
        if not isinstance(v, list) or any(finite(x) is None for x in v):
            self.note(path, f"is {brief(v)}, not a list of numbers")
            return None
        if length is not None and len(v) != length:
            self.note(path, f"has {len(v)} entries, {of} {length}")
            return None
        return v


def finite(x) -> float | None:
    """x as a finite float, or None for anything else (text, a bool, NaN)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def brief(v) -> str:
    text = json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else str(v)
    return text if len(text) <= 40 else text[:37] + "..."
