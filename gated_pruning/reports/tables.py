"""How the reports write numbers and tables: one markdown table writer and one formatter for
percentages, spreads and signed differences, so every view prints a number the same way."""
from __future__ import annotations

DASH = "-"  # a value the record does not have (an older record, a run without that step)


def pct(mean: float | None, std: float | None = None, digits: int = 2) -> str:
    """A fraction as a percentage, `31.00 ± 1.41` with a spread, `-` without a value."""
    if mean is None:
        return DASH
    return f"{100 * mean:.{digits}f}" + (f" ± {100 * std:.{digits}f}" if std is not None else "")


def points(mean: float | None, std: float | None = None, n: int | None = None) -> str:
    """A difference of two fractions in percentage points, signed: `+1.20 ± 0.30 (n=3)`."""
    if mean is None:
        return DASH
    text = f"{100 * mean:+.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")
    return text + (f" (n={n})" if n is not None else "")


def num(x, spec: str = "g") -> str:
    """A number in `spec` (`g`: gammas and targets as given), `-` for None."""
    return DASH if x is None else format(x, spec)


def cell(text) -> str:
    """A table cell: a `|` in the text would end the cell."""
    return str(text).replace("|", "\\|")


def markdown_table(columns, rows) -> str:
    """A markdown table: a header row, the `---` row, one line per row of cells."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
