"""What one config value may be: a `Rule` (a number in a range, an integer, a flag, text, one of
some choices, a list, either of two rules), its constructors, and how a value is shown in a
message (as a command line writes it). `config.RULES` says which rule each key follows."""
from __future__ import annotations

import math
from dataclasses import dataclass


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def show(value) -> str:
    """A value as a command line would write it: 0.5, 'abc', null, true."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return repr(value)


@dataclass(frozen=True)
class Rule:
    """What one value may be. `problem(value)` says what is wrong with it, or returns None.

    kind: "number" (int or float; `integer` for int only), "flag" (true/false), "text"
    (a non-empty string), "choice" (one of `choices`), "list" (of values that each pass `item`).
    """
    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    null: bool = False
    choices: tuple = ()
    item: Rule | None = None

    def options(self) -> tuple:
        """The choices: a tuple, or read from a registry when the rule is checked (`choice_of`)."""
        return tuple(self.choices()) if callable(self.choices) else self.choices

    def allowed(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.options()))
        if self.kind == "flag":
            return "true or false"
        if self.kind == "text":
            return "a non-empty string"
        if self.kind == "list":
            return f"a list of {self.item.allowed()}"
        if self.kind == "either":
            return " or ".join(o.allowed() for o in self.choices)
        what = "an integer" if self.integer else "a finite number"
        return what + (" " + self._range() if self._range() else "")

    def _range(self) -> str:
        if self.lo is not None and self.hi is not None:
            return (f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}"
                    f"{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return ""

    def problem(self, value) -> str | None:
        if value is None:
            return None if self.null else f"must be {self.allowed()}, not null"
        if self.kind == "either":
            return None if any(o.problem(value) is None for o in self.choices) else f"must be {self.allowed()}"
        if self.kind == "choice":
            if isinstance(value, bool) or value not in self.options():
                return f"is not one of {', '.join(map(str, self.options()))}"
            return None
        if self.kind == "flag":
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind == "text":
            if not isinstance(value, str):
                return "must be a string (quote it: key='...')"
            return None if value.strip() else "must not be empty"
        if self.kind == "list":
            if not isinstance(value, (list, tuple)):
                return f"must be {self.allowed()} ([a, b, ...])"
            for v in value:
                p = self.item.problem(v)
                if p:
                    return f"holds {show(v)}, which {p}"
            return None
        # numbers
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "is not an integer" if self.integer else "is not a number"
        if self.integer and not isinstance(value, int):
            return "is not an integer"
        if not math.isfinite(value):
            return "must be a finite number"
        too_low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        too_high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if too_low or too_high:
            if self.lo is not None and self.hi is not None:
                return f"is outside {self._range()[3:]}"
            return f"must be {self._range()}"
        return None


def number(lo=None, hi=None, *, lo_open=False, hi_open=False, null=False) -> Rule:
    return Rule("number", lo, hi, lo_open, hi_open, null=null)


def integer(lo=None, hi=None, *, null=False) -> Rule:
    return Rule("number", lo, hi, integer=True, null=null)


def flag(*, null=False) -> Rule:
    return Rule("flag", null=null)


def text(*, null=False) -> Rule:
    return Rule("text", null=null)


def choice(*values, null=False) -> Rule:
    return Rule("choice", choices=tuple(values), null=null)


def choice_of(registry, *, null=False) -> Rule:
    """One of the keys of `registry` (a dict, or a function giving the choices), read each time the
    rule is checked: a kind registered after this module was imported is a choice too."""
    return Rule("choice", choices=registry if callable(registry) else (lambda: tuple(registry)), null=null)


def list_of(item: Rule, *, null=False) -> Rule:
    return Rule("list", item=item, null=null)


def either(*options: Rule) -> Rule:
    """A value that passes any one of `options` (a key whose type depends on another key)."""
    return Rule("either", choices=tuple(options))
