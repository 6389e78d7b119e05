"""`harness plan`'s text: one row per grid point, one column per varying parameter under its full dotted
name (wrapped over lines at `.`, then `_`, only where the width needs it; a name or value is never cut),
then seeds, memory, tokens and time, within the terminal's width. A grid with too many parameters for one
table prints its parameters and its figures as two tables sharing the point number.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Any

from harness.grid.plan import DEVICES_GIB, GridPlan
from harness.grid.power import power_lines
from harness.labels import value_text

MIN_LAST = 24  # the last column (the memory verdict) wraps, not narrower than its longest word


# Where a header may wrap, the first that lets the table fit: at spaces only (`lora.target_modules` whole),
# after a `.` too (`lora.` / `target_modules`), after a `_` too (`lora.` / `target_` / `modules`).
BREAKS = (" ", ". ", "._ ")


@dataclass
class Column:
    header: str
    cells: list[str]
    right: bool = False  # numbers align right

    def width(self, breaks: str) -> int:
        return max([len(c) for c in self.cells] + [len(part) for part in _parts(self.header, breaks)])


def _parts(header: str, breaks: str) -> list[str]:
    """The header's pieces, each ending at one of `breaks` it may wrap after."""
    chars = re.escape(breaks)
    return [p.strip() for p in re.findall(rf"[^{chars}]+[{chars}]?|[{chars}]", header) if p.strip()]


def _header_lines(header: str, width: int, breaks: str) -> list[str]:
    lines = [""]
    for part in _parts(header, breaks):
        glue = "" if not lines[-1] or lines[-1][-1] in "._" else " "
        if lines[-1] and len(lines[-1] + glue + part) > width:
            lines.append(part)
        else:
            lines[-1] += glue + part
    return lines


def render(columns: list[Column], width: int, strict: bool = True) -> list[str] | None:
    """The columns as lines of at most `width` characters (the last column wraps at spaces), or, when the
    others alone leave it less than MIN_LAST, None (`strict`) or longer lines: nothing is ever cut."""
    for breaks, gap in ((b, g) for b in BREAKS for g in (2, 1)):
        widths = [c.width(breaks) for c in columns]
        fixed = sum(widths[:-1]) + gap * (len(columns) - 1)
        if fixed + min(widths[-1], MIN_LAST) <= width:
            break
    else:
        if strict:
            return None
        width = fixed + widths[-1]
    widths[-1] = min(widths[-1], width - fixed)
    heads = [_header_lines(c.header, w, breaks) for c, w in zip(columns, widths)]
    depth = max(len(h) for h in heads)
    heads = [[""] * (depth - len(h)) + h for h in heads]  # headers sit on the rule
    rows = [[h[i] for h in heads] for i in range(depth)] + [["-" * w for w in widths]]
    lines = [_line(row, columns, widths, gap) for row in rows]
    for r in range(len(columns[0].cells)):
        last = textwrap.wrap(columns[-1].cells[r], widths[-1], break_long_words=False,
                             break_on_hyphens=False) or [""]
        lines.append(_line([c.cells[r] for c in columns[:-1]] + [last[0]], columns, widths, gap))
        lines += [" " * fixed + more for more in last[1:]]
    return lines


def _line(cells: list[str], columns: list[Column], widths: list[int], gap: int) -> str:
    return (" " * gap).join(cell.rjust(w) if c.right else cell.ljust(w)
                            for cell, c, w in zip(cells, columns, widths)).rstrip()


def duration(seconds: float) -> str:
    """Seconds as `<0.01 s`, `0.042 s`, `7.5 s`, `42 s`, `12.3 min` or `2.1 h`."""
    if seconds < 0.01:
        return "<0.01 s"
    if seconds < 1:
        return f"{seconds:.2g} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 100 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _time(seconds: float, estimated: bool) -> str:
    """A duration, `~` before an estimate's (`<0.01 s` says enough)."""
    text = duration(seconds)
    return f"~{text}" if estimated and not text.startswith("<") else text


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else value_text(value)


def _columns(plan: GridPlan) -> tuple[list[Column], list[Column]]:
    """(the point number and its parameters, the point's figures)."""
    points = plan.points

    def time(seconds: float | None) -> str:
        return "–" if seconds is None else _time(seconds, plan.time.estimated)

    params = [Column(key, [_value(p.params[key]) if key in p.params else "–" for p in points],
                     right=all(_numeric(p.params.get(key)) for p in points)) for key in plan.keys]
    figures = [Column("seeds", [f"×{p.seeds}" for p in points], right=True),
               Column("GiB", [f"{p.peak_gib:.1f}" for p in points], right=True),
               Column("tokens per trial", [f"{p.tokens:,}" for p in points], right=True),
               Column("time per trial", [time(p.seconds) for p in points], right=True),
               Column("all seeds", [time(p.all_seconds) for p in points], right=True),
               Column("memory", [p.verdict for p in points])]
    return [Column("#", [str(p.index) for p in points], right=True), *params], figures


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _prose(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def format_plan(plan: GridPlan, name: str, width: int = 80) -> str:
    """The plan as lines of at most `width` characters (a path in the notes may run longer)."""
    device_gib = DEVICES_GIB[plan.device]
    seeds = "/".join(str(n) for n in sorted({p.seeds for p in plan.points}))
    lines = _prose(f"{name}: {_count(plan.trials, 'trial')} = {_count(len(plan.points), 'grid point')} × "
                   f"{seeds} seed{'' if seeds == '1' else 's'}; {plan.gpus} x {plan.device}"
                   + (f" ({device_gib:g} GiB each)" if device_gib else ""), width)
    head, figures = _columns(plan)
    table = render(head + figures, width)
    if table is None:  # too many parameters for one table: the parameters, then the figures, by point
        table = render(head, width, strict=False) + [""] + render(head[:1] + figures, width, strict=False)
    lines += table + _prose(plan.time.note, width)
    total = plan.grid_seconds
    if total is not None:
        lines += _prose(f"grid: {_count(plan.trials, 'trial')} on {plan.gpus} x {plan.device}: "
                        f"{_time(total, plan.time.estimated)} "
                        f"({plan.time.short})"
                        + (f", about ${plan.cost:,.2f} at ${plan.price_per_hour:g}/GPU-hour"
                           if plan.cost is not None else "; set pricing.device_price_per_hour for a cost"), width)
    if plan.powers:
        lines += _prose("power per comparison (80%, two-sided alpha 0.05, per seed; the SD of a paired "
                        "difference from the source in parentheses):", width)
        for line in power_lines(plan.powers):
            lines += _prose(f"- {line}", width)
    return "\n".join(lines)
