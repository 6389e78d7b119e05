"""Does a figure pass a look? Its visible text measured with matplotlib's own extents after a full draw (the
constrained layout applied, as `savefig` applies it): no two texts overlap, none leaves the canvas, no legend
sits on the data, and no two panels draw the same data.

`layout_problems(fig)` lists what is wrong (empty: it passes); `assert_layout_ok` fails a test with that list.
Used on the figures of real smoke studies (tests/e2e/test_experiments.py) and on figures of synthetic studies
(tests/unit/test_figure_layout.py).
"""

from __future__ import annotations

from typing import Iterable

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from analysis.figures import STYLE

# Extents are whole pixels at the figure's dpi; a shared edge of a pixel or less is not an overlap.
TOLERANCE_PX = 1.0
_SAMPLES_PER_SEGMENT = 12  # points tested along each drawn line segment against a legend's box


def _drawn_tick_labels(axis: Axis) -> tuple[list[Text], list[Text]]:
    """(the tick labels this axis draws, every tick label it holds): ticks outside the view are not drawn."""
    low, high = sorted(axis.get_view_interval())
    slack = 1e-9 * max(abs(high - low), 1e-300)
    drawn, every = [], []
    for minor in (False, True):
        ticks = axis.get_minor_ticks() if minor else axis.get_major_ticks()
        locs = axis.get_minorticklocs() if minor else axis.get_majorticklocs()
        for tick, loc in zip(ticks, locs):
            labels = [tick.label1, tick.label2]
            every += labels
            if low - slack <= loc <= high + slack:
                drawn += [label for label in labels if label.get_visible()]
        every += [label for tick in ticks[len(locs):] for label in (tick.label1, tick.label2)]
    return drawn, every


def _legends(fig: Figure) -> list[Legend]:
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]


def visible_texts(fig: Figure) -> list[Text]:
    """Every text the drawn figure shows: titles, axis and tick labels, legends, annotations, figure texts."""
    shown_ticks: set[int] = set()
    tick_labels: set[int] = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            drawn, every = _drawn_tick_labels(axis)
            shown_ticks |= {id(t) for t in drawn if ax.get_visible() and axis.get_visible()}
            tick_labels |= {id(t) for t in every}
    hidden: set[int] = set()
    for legend in _legends(fig):
        if not legend.get_visible():
            hidden |= {id(t) for t in [*legend.get_texts(), legend.get_title()]}
    texts = []
    for t in fig.findobj(Text, include_self=False):
        if id(t) in hidden or not t.get_visible() or not t.get_text().strip():
            continue
        if id(t) in tick_labels and id(t) not in shown_ticks:
            continue
        if t.axes is not None and not t.axes.get_visible():
            continue
        texts.append(t)
    return list({id(t): t for t in texts}.values())


def _describe(t: Text) -> str:
    text = t.get_text().replace("\n", " ")
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _overlap(a: Bbox, b: Bbox, tolerance: float) -> bool:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width > tolerance and height > tolerance


def _data_points(ax: Axes, renderer) -> tuple[np.ndarray, list[Bbox]]:
    """The axes' data in display pixels: points along its lines, markers, error bars, and its bars' boxes."""
    points: list[np.ndarray] = []

    def along(xy: np.ndarray) -> None:
        xy = xy[np.all(np.isfinite(xy), axis=1)]
        if len(xy) == 1:
            points.append(xy)
        elif len(xy) > 1:
            steps = np.linspace(0, 1, _SAMPLES_PER_SEGMENT)[:, None, None]
            points.append((xy[:-1] + steps * (xy[1:] - xy[:-1])).reshape(-1, 2))

    for line in ax.get_lines():
        if line.get_visible():
            xy = line.get_transform().transform(np.asarray(line.get_xydata(), float))
            along(xy) if line.get_linestyle() not in ("None", "none", "", " ") else points.append(xy)
    for collection in ax.collections:
        if not collection.get_visible():
            continue
        if isinstance(collection, LineCollection):
            for segment in collection.get_segments():
                along(collection.get_transform().transform(np.asarray(segment, float)))
        elif isinstance(collection, PathCollection):
            offsets = np.asarray(collection.get_offsets(), float)
            if offsets.size:
                points.append(collection.get_offset_transform().transform(offsets))
        else:  # a filled band
            for path in collection.get_paths():
                points.append(collection.get_transform().transform(path.vertices))
    boxes = [p.get_window_extent(renderer) for p in ax.patches if isinstance(p, Rectangle) and p.get_visible()]
    return (np.vstack(points) if points else np.empty((0, 2))), boxes


def _panel_data(ax: Axes) -> tuple:
    """What one panel draws, rounded, and the names on its ticks: a panel that repeats another draws the same data
    at the same names (two comparisons that happen to score alike are not a repeat)."""
    lines = sorted(tuple(np.round(np.asarray(line.get_xydata(), float), 6).ravel()) for line in ax.get_lines()
                   if line.get_visible() and len(line.get_xydata()) > 0)
    bars = sorted((round(p.get_x(), 6), round(p.get_y(), 6), round(p.get_width(), 6), round(p.get_height(), 6))
                  for p in ax.patches if isinstance(p, Rectangle))
    names = tuple(t.get_text() for axis in (ax.xaxis, ax.yaxis) for t in axis.get_ticklabels())
    return tuple(lines), tuple(bars), names


def layout_problems(fig: Figure, *, tolerance: float = TOLERANCE_PX) -> list[str]:
    """What a reader would see wrong in `fig`, one line each; [] when it passes. Drawn as `analysis.figures` saves
    it: in its style (ticks made at draw time take their size from it) and at the PNG's dpi."""
    dpi = fig.dpi
    with matplotlib.rc_context(STYLE):
        fig.set_dpi(STYLE["savefig.dpi"])
        try:
            return _problems(fig, tolerance)
        finally:
            fig.set_dpi(dpi)


def _problems(fig: Figure, tolerance: float) -> list[str]:
    FigureCanvasAgg(fig)  # a canvas that draws (a bare `Figure` has none)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    texts = visible_texts(fig)
    boxes = [t.get_window_extent(renderer) for t in texts]
    problems = []
    for t, box in zip(texts, boxes):
        if (box.x0 < canvas.x0 - tolerance or box.y0 < canvas.y0 - tolerance or box.x1 > canvas.x1 + tolerance
                or box.y1 > canvas.y1 + tolerance):
            problems.append(f"text {_describe(t)} leaves the canvas ({box.x0:.0f}..{box.x1:.0f} × "
                            f"{box.y0:.0f}..{box.y1:.0f} px of {canvas.width:.0f} × {canvas.height:.0f})")
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if _overlap(boxes[i], boxes[j], tolerance):
                problems.append(f"texts {_describe(texts[i])} and {_describe(texts[j])} overlap")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for legend in _legends(fig):
        if not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        inner = Bbox.from_extents(box.x0 + tolerance, box.y0 + tolerance, box.x1 - tolerance, box.y1 - tolerance)
        for ax in axes:
            if not _overlap(inner, ax.bbox, 0):
                continue
            points, bars = _data_points(ax, renderer)
            inside = ((points[:, 0] > inner.x0) & (points[:, 0] < inner.x1) & (points[:, 1] > inner.y0)
                      & (points[:, 1] < inner.y1)) if len(points) else np.array([], bool)
            if inside.any() or any(_overlap(inner, bar, 0) for bar in bars):
                title = ax.get_title() or "a panel"
                problems.append(f"the legend ({_describe(legend.get_texts()[0]) if legend.get_texts() else ''}) "
                                f"covers data in {title!r}")
    seen: dict[tuple, str] = {}
    for k, ax in enumerate(axes):
        drawn = _panel_data(ax)
        if drawn[:2] != ((), ()) and drawn in seen:
            problems.append(f"panel {ax.get_title() or k!r} repeats panel {seen[drawn]!r}")
        seen.setdefault(drawn, ax.get_title() or str(k))
    return problems


def assert_layout_ok(figures: Iterable[tuple[str, Figure]]) -> None:
    """Fail with every problem of every (name, figure) at once."""
    found = [f"{name}: {p}" for name, fig in figures for p in layout_problems(fig)]
    assert not found, "figures that do not pass a look:\n" + "\n".join(found)

