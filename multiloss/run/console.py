"""Console output: tables, and weights rounded for people (the epoch line is in :mod:`multiloss.run.epochlog`).

* :func:`round_weight` — a weight to six significant digits (``0.1``, not
  ``0.09999995678663254``), for history files and tables.
* :func:`table` — an aligned text table (rich when importable, else plain).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence


def round_weight(x: float) -> float:
    """``x`` to six significant digits, as the shortest float that prints so.

    Weights live in float32 (about seven significant digits) and a logged weight
    is an epoch mean accumulated in float32, so its seventh digit is noise:
    ``0.1`` is logged as ``0.10000000149011612`` (float32's 0.1) or as
    ``0.09999995678663254`` (the mean of 0.1 over an epoch); both become ``0.1``.
    The relative change is at most 5e-6.  NaN and ±inf are returned unchanged.
    """
    x = float(x)
    if not math.isfinite(x):
        return x
    return float(f"{x:.6g}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """An aligned text table: a header line, a rule, one line per row.

    Columns are separated by two spaces; columns whose cells are all numbers
    are right-aligned.  No colours or control codes, so it can be piped.
    """
    cells = [[str(c) for c in r] for r in rows]
    numeric = [bool(cells) and all(_is_number(r[i]) for r in cells if i < len(r)) for i in range(len(headers))]
    try:
        from rich import box
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich comes with Keras
        return _plain_table(cells, list(headers), numeric)
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0),
              header_style=None, highlight=False)
    for h, num in zip(headers, numeric):
        t.add_column(str(h), justify="right" if num else "left", no_wrap=True)
    for r in cells:
        t.add_row(*r)
    buf = io.StringIO()
    Console(file=buf, width=10_000, color_system=None, force_terminal=False, no_color=True,
            highlight=False, emoji=False, markup=False).print(t)
    return "\n".join(line.rstrip() for line in buf.getvalue().rstrip("\n").splitlines())


def _plain_table(cells: list[list[str]], headers: list[str], numeric: list[bool]) -> str:
    widths = [max(len(r[i]) for r in [headers, *cells]) for i in range(len(headers))]

    def fmt(r, head=False):
        return "  ".join((c.rjust(w) if num and not head else c.ljust(w))
                         for c, w, num in zip(r, widths, numeric)).rstrip()

    return "\n".join([fmt(headers, True), "─" * (sum(widths) + 2 * (len(widths) - 1))]
                     + [fmt(r) for r in cells])



__all__ = ["round_weight", "table"]
