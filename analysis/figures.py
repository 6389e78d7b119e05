"""Publication-style figures (PNG + PDF): labelled axes with units, CIs drawn, nothing left blank.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot global state, no GUI backend),
so they render the same in a notebook, a CLI and a test. Every function returns a `FigureFiles`:
the paths it wrote and the figure itself, or none and the reason it skipped (the study lacks the data it needs).

What a reader sees is kept readable: metrics by their display names, arms by what tells them apart
(`analysis.labels`), legends outside the axes (they cover no data), tick density bounded (`MaxNLocator`),
titles and long labels wrapped to the figure's width, point labels placed where they overlap nothing.
Categorical levels are points with whiskers, never joined by a line; the discrete levels of a number are
joined by a thin line between their means, never by an interpolated CI band. `tests/support/figure_layout.py`
checks the drawn text of every figure of the smoke studies.
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import matplotlib.lines
import matplotlib.patches
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox

from analysis import front
from analysis.compare import Comparison, Quality
from analysis.contrasts import Factor, LevelMean, slug
from analysis.labels import config_params, parse_label, short_labels, short_params
from analysis.load import SCORE_PREFIX, Study
from harness.evaluation.metrics import HIGHER, LOWER, display_name, score_spec
from harness.labels import varying_keys
from harness.stats.factors import format_value, same_level

STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 7.5, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "grid.linewidth": 0.5, "lines.linewidth": 1.4, "savefig.dpi": 200,
    "pdf.fonttype": 42,  # TrueType, not Type 3, in PDFs: editable text, accepted by ACM/IEEE checks
}
# Coloured by outcome; a descriptive metric's "higher" and "lower" get colours that say neither good nor bad.
VERDICT_COLOURS = {"improved": "#1b7837", "regressed": "#b2182b", "higher": "#2166ac", "lower": "#8073ac",
                   "equivalent": "#92c5de", "inconclusive": "#7f7f7f"}
FRONT_COLOURS = {front.OPTIMAL: "#d95f02", front.TIED: "#7570b3", front.DOMINATED: "0.6"}
UNIT_PANEL = "scores in [0, 1]"
RANK_PARAM = "lora.r"
LEGEND_FONT = 7.0
# An average DejaVu Sans glyph is about 0.6 em wide: how many characters fit on a line of a given width.
_GLYPH_EM = 0.6


@dataclass(frozen=True)
class FigureFiles:
    """What one figure function produced: its files and the figure, or why it produced none."""

    name: str
    paths: tuple[Path, ...] = ()
    skipped: str | None = None
    caption: str = ""
    # The drawn figure itself, for checks of its layout (`tests/support/figure_layout.py`); None when skipped.
    figure: Figure | None = field(default=None, compare=False, repr=False)

    def __bool__(self) -> bool:
        return bool(self.paths)

    @property
    def png(self) -> Path | None:
        return next((p for p in self.paths if p.suffix == ".png"), None)


def _has_data(ax) -> bool:
    return bool(ax.lines or ax.collections or ax.patches or ax.images or ax.containers)


def _save(fig: Figure, out_dir: Path, name: str, caption: str) -> FigureFiles:
    """Write `name`.png and `name`.pdf, refusing a figure with an empty panel (a silent bug otherwise)."""
    blank = [ax.get_title() or f"panel {i}" for i, ax in enumerate(fig.axes) if ax.get_visible() and not _has_data(ax)]
    if blank:
        raise RuntimeError(f"figure '{name}' would have blank axes: {', '.join(blank)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with matplotlib.rc_context(STYLE):
        for suffix in (".png", ".pdf"):
            path = out_dir / f"{name}{suffix}"
            # No creation date: the same trials give the same bytes (committed reports re-render identically).
            fig.savefig(path, metadata={"CreationDate": None} if suffix == ".pdf" else None)
            paths.append(path)
    return FigureFiles(name, tuple(paths), caption=caption, figure=fig)


def _figure(width: float = 5.0, height: float = 3.2, **subplots) -> tuple[Figure, np.ndarray]:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(squeeze=False, **subplots)
    return fig, axes


def _score_ylim(ax, values) -> None:
    """Keep a near-constant score visible: autoscaling a flat line at 0 zooms into rounding noise."""
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if values.size == 0:
        return
    low, high = values.min(), values.max()
    pad = max(0.05, 0.1 * (high - low))
    ax.set_ylim(low - pad, high + pad)


def _skip(name: str, reason: str) -> FigureFiles:
    return FigureFiles(name, skipped=reason)


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """`text` wrapped to lines of about `width_in` inches at `fontsize` points."""
    return textwrap.fill(text, max(12, int(width_in * 72 / (_GLYPH_EM * fontsize))), break_on_hyphens=False)


def _minus(text: str) -> str:
    return text.replace("-", "−")  # a typographic minus, as the tables print it


def metric_name(metric: str) -> str:
    """A metric's display name for a figure; an lm-eval task id without its `_local` suffix and underscores
    (`arc_easy_local acc` → `arc easy accuracy`)."""
    return re.sub(r"_local\b", "", display_name(metric)).replace("_", " ")


def _readable(text: str, metrics: Sequence[str]) -> str:
    """A title with each metric key in it replaced by the metric's display name."""
    for m in sorted(metrics, key=len, reverse=True):
        text = text.replace(m, metric_name(m))
    return text


def _few_ticks(axis, nbins: int = 5) -> None:
    """At most about `nbins` intervals of round numbers on a linear axis: tick labels never run together."""
    axis.set_major_locator(MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]))


def _legend_outside(fig: Figure, handles: Sequence, labels: Sequence[str], *, title: str | None = None,
                    below: bool | None = None) -> None:
    """One legend outside every axes (constrained layout makes room for it), so it covers no data: to the right
    for short labels, below the axes in as many columns as fit for long ones."""
    if not handles:
        return
    longest = max(len(line) for label in labels for line in label.split("\n"))
    below = longest > 24 if below is None else below
    if below:
        fits = int(fig.get_figwidth() * 72 / (_GLYPH_EM * LEGEND_FONT * (longest + 5)))
        fig.legend(handles, labels, loc="outside lower center", ncols=max(1, min(len(labels), fits)), frameon=False,
                   fontsize=LEGEND_FONT, title=title, title_fontsize=LEGEND_FONT)
    else:
        fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize=LEGEND_FONT, title=title,
                   title_fontsize=LEGEND_FONT)


def _trial_lines(log: pd.DataFrame) -> tuple[dict[str, str], dict[str, Any], dict[Any, str]]:
    """How a per-trial log draws: each grid point's short name and colour, each seed's line style."""
    configs = sorted(log["config"].fillna("").unique(), key=str)
    keys = varying_keys([config_params(c) for c in configs], absent_counts=False)
    palette = matplotlib.colormaps["tab10" if len(configs) <= 10 else "viridis"]
    colours = {c: palette(i if len(configs) <= 10 else 0.85 * i / (len(configs) - 1)) for i, c in enumerate(configs)}
    seeds = sorted(log["seed"].dropna().unique())
    styles = {s: ls for s, ls in zip(seeds, ["-", "--", ":", "-."] * (len(seeds) // 4 + 1))}
    return {c: short_params(config_params(c), keys) for c in configs}, colours, styles


def loss_curves(study: Study, out_dir: Path, *, name: str = "loss_curves") -> FigureFiles:
    """Training loss against step, one line per trial (colour: config, line style: seed); one panel per kind
    of loss (SFT's cross-entropy and KD's divergence to a teacher are not one scale)."""
    from harness.stages.registry import stage_named

    log = study.train_log
    if log.empty or "loss" not in log or "step" not in log or log["loss"].notna().sum() == 0:
        return _skip(name, "no training loss logged (train_log.jsonl) in any trial")
    log = log.assign(training=log["training"].fillna("sft") if "training" in log else "sft")
    kinds = sorted(log["training"].unique(), key=lambda k: (k != "sft", k))
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(5.5, 3.4 if len(kinds) == 1 else 2.6 * len(kinds), nrows=len(kinds), sharex=True)
        names, colours, styles = _trial_lines(log)
        legend: dict[str, object] = {}
        for ax, kind in zip(axes[:, 0], kinds):
            for trial, rows in log[log["training"] == kind].groupby("trial"):
                rows = rows.dropna(subset=["loss"]).sort_values("step")
                if rows.empty:
                    continue
                config, seed, status = rows["config"].iloc[0], rows["seed"].iloc[0], rows["status"].iloc[0]
                label = (", ".join(part for part in (names.get(config, ""), f"seed {seed}") if part)
                         + ("" if status == "complete" else f" ({status})"))
                line, = ax.plot(rows["step"], rows["loss"], color=colours[config], linestyle=styles.get(seed, "-"),
                                alpha=1.0 if status == "complete" else 0.4)
                legend.setdefault(label, line)
            stage = stage_named(kind)
            what = stage.loss if stage is not None and stage.loss else "loss"
            ax.set_ylabel(f"{kind.upper()} loss\n({what})" if len(kinds) > 1 else f"training loss\n({what})",
                          fontsize=7.5)
        axes[-1, 0].set_xlabel("training step")
        axes[0, 0].set_title(_wrap(f"{study.name}: training loss per trial", 4.0, STYLE["axes.titlesize"]))
        if len(legend) <= 16:  # more would be a wall of text: the caption says what colour and style mean
            _legend_outside(fig, list(legend.values()), list(legend))
    return _save(fig, out_dir, name, ("Training loss of each trial's first training (SFT, or KD's divergence to the "
                                     "teacher, in its own panel) per step; colour is the grid point, line style the "
                                     "seed. A continuing stage (DPO, GRPO) logs to its own file in the trial "
                                     "(dpo_log.jsonl, grpo_log.jsonl)."))


STAGE_MARKERS = ("o", "s", "^", "D", "v")


def dev_curve(study: Study, out_dir: Path, *, name: str = "dev_curve") -> FigureFiles | None:
    """The dev learning curve: the headline metric on the dev split at each checkpoint a trial scored
    (`eval.dev_every_steps`), against optimiser steps counted across its trainings; a line per trial (colour:
    grid point, line style: seed), a marker shape per training stage (SFT, then DPO or GRPO). None for a design
    that scores no checkpoints: a figure it never asked for is not a figure missing."""
    curve = study.dev_curve
    if curve.empty or "value" not in curve or curve["value"].notna().sum() == 0:
        if not study.dev_every_steps:
            return None
        return _skip(name, "no trial scored its dev split during training")
    metrics = sorted(curve["metric"].dropna().unique())
    stages = list(dict.fromkeys(curve.sort_values("step")["stage"]))
    markers = {stage: m for stage, m in zip(stages, STAGE_MARKERS * (len(stages) // len(STAGE_MARKERS) + 1))}
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(5.5, 3.4)
        ax = axes[0, 0]
        names, colours, styles = _trial_lines(curve)
        legend: dict[str, object] = {}
        for trial, rows in curve.dropna(subset=["value"]).groupby("trial"):
            rows = rows.sort_values("step")
            config, seed, status = rows["config"].iloc[0], rows["seed"].iloc[0], rows["status"].iloc[0]
            alpha = 1.0 if status == "complete" else 0.4
            line, = ax.plot(rows["step"], rows["value"], color=colours[config], linestyle=styles.get(seed, "-"),
                            alpha=alpha)
            for stage, points in rows.groupby("stage", sort=False):
                ax.plot(points["step"], points["value"], linestyle="none", marker=markers[stage], markersize=3.5,
                        color=colours[config], alpha=alpha)
            label = (", ".join(part for part in (names.get(config, ""), f"seed {seed}") if part)
                     + ("" if status == "complete" else f" ({status})"))
            legend.setdefault(label, line)
        if len(stages) > 1:  # which stage trained the model at each point
            for stage in stages:
                legend[f"{stage.upper()} step"] = matplotlib.lines.Line2D([], [], color="0.35", linestyle="none",
                                                                          marker=markers[stage], markersize=3.5)
        if all(score_spec(m).bounded for m in metrics):
            _score_ylim(ax, curve["value"])
        ax.set_xlabel("optimiser step (across the trial's trainings)")
        ax.set_ylabel(f"{', '.join(metric_name(m) for m in metrics)}\n(dev split)")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.set_title(_wrap(f"{study.name}: dev {', '.join(metric_name(m) for m in metrics)} during training", 4.0,
                           STYLE["axes.titlesize"]))
        if len(legend) <= 16:
            _legend_outside(fig, list(legend.values()), list(legend))
    return _save(fig, out_dir, name, ("The headline metric on the dev split at each checkpoint a trial scored "
                                     "(eval.dev_every_steps), against optimiser steps counted across the trial's "
                                     "trainings; colour is the grid point, line style the seed, marker shape the "
                                     "training stage. The dev split is carved from the training side: the held-out "
                                     "split is never scored during training, so these points are not the report's "
                                     "held-out results."))


def stage_diagnostics(study: Study, out_dir: Path, *, name: str = "stage_diagnostics") -> FigureFiles:
    """What each continuing stage's training did per step, from its own log: the loss and the values its
    registry entry declares (DPO's reward margin, reward accuracy and log-probs; GRPO's reward, its spread
    within a group and the share of groups with no advantage). One row of panels per stage, a line per trial."""
    from harness.stages.registry import stage_named

    log = study.stage_logs
    if log.empty or "step" not in log:
        return _skip(name, "no continuing stage (DPO, GRPO) logged its training in any trial")
    panels: list[tuple[str, str, str]] = []  # (stage, key, what it is)
    constant: list[str] = []
    for stage_name in sorted(log["stage"].unique()):
        stage = stage_named(stage_name)
        rows = log[log["stage"] == stage_name]
        declared = [("loss", stage.loss if stage and stage.loss else "loss"), *(stage.diagnostics if stage else ())]
        for key, what in declared:
            values = rows[key].dropna() if key in rows else pd.Series(dtype=float)
            if values.empty:
                continue
            if values.nunique() == 1:  # a flat line says less than its value does (and repeats any other flat one)
                constant.append(f"{stage_name.upper()} {key} = {values.iloc[0]:.4g}")
            else:
                panels.append((stage_name, key, what))
    if not panels:
        return _skip(name, "the continuing stages' logs hold none of the values their stages declare"
                     + (f" that vary (constant: {'; '.join(constant)})" if constant else ""))
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    names, colours, styles = _trial_lines(log)
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(2.6 * cols + 1.6, 2.3 * nrows, nrows=nrows, ncols=cols)
        legend: dict[str, object] = {}
        for ax, (stage_name, key, what) in zip(axes.flat, panels):
            for trial, rows in log[log["stage"] == stage_name].dropna(subset=[key]).groupby("trial"):
                rows = rows.sort_values("step")
                config, seed = rows["config"].iloc[0], rows["seed"].iloc[0]
                line, = ax.plot(rows["step"], rows[key], color=colours[config], linestyle=styles.get(seed, "-"),
                                marker="o", markersize=2.5)
                label = ", ".join(p for p in (names.get(config, ""), f"seed {seed}") if p)
                legend.setdefault(label, line)
            title = what if what.upper().startswith(stage_name.upper()) else f"{stage_name.upper()}: {what}"
            ax.set_title(_wrap(title, 2.4, STYLE["axes.titlesize"] * 0.8),
                         fontsize=STYLE["axes.titlesize"] * 0.8)
            ax.set_xlabel("step", fontsize=7.5)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        if len(legend) <= 16:
            _legend_outside(fig, list(legend.values()), list(legend))
    return _save(fig, out_dir, name, ("Each continuing stage's training per logged step, from its own log "
                                     "(dpo_log.jsonl, grpo_log.jsonl): its loss and the values the stage declares; "
                                     "colour is the grid point, line style the seed."
                                     + (f" Constant throughout, not drawn: {'; '.join(constant)}." if constant else "")))


def _series_label(arm: str, params: dict[str, str]) -> str:
    """An arm label rebuilt from its arm and some of its params (`analysis.load.arm_label`'s form)."""
    return f"{arm}[{','.join(f'{k}={v}' for k, v in params.items())}]" if params else arm


def quality_vs_rank(study: Study, qualities: Sequence[Quality], metric: str, out_dir: Path, *,
                    name: str = "quality_vs_rank") -> FigureFiles:
    """Quality at each LoRA rank (log2 axis), each rank's mean with its CI whiskers and a thin line between one
    series' means; untuned arms as horizontal reference bands."""
    if RANK_PARAM not in study.varying_params:
        return _skip(name, f"the study does not vary '{RANK_PARAM}'")
    points = []
    for q in qualities:
        params = study.params_of(q.label)
        if RANK_PARAM in params and q.metric == metric:
            arm, shown = parse_label(q.label)
            series = _series_label(arm, {k: v for k, v in shown.items() if k != RANK_PARAM})
            points.append((series, float(params[RANK_PARAM]), q))
    if len({p[1] for p in points}) < 2:
        return _skip(name, f"fewer than two '{RANK_PARAM}' values among complete trials")
    references = [q for q in qualities if q.metric == metric and RANK_PARAM not in study.params_of(q.label)]
    names = short_labels([p[0] for p in points] + [q.label for q in references])
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(5.5, 3.3)
        ax = axes[0, 0]
        ranks = sorted({p[1] for p in points})
        frame = pd.DataFrame(points, columns=["series", "rank", "q"])
        groups = list(frame.groupby("series", sort=True))
        for k, (series, group) in enumerate(groups):
            group = group.sort_values("rank")
            # Series are nudged apart on the log axis so their whiskers do not hide each other.
            xs = group["rank"].to_numpy(float) * 2 ** (0.05 * (k - (len(groups) - 1) / 2))
            mean = np.array([q.mean for q in group["q"]])
            err = np.vstack([mean - [q.ci_low for q in group["q"]], [q.ci_high for q in group["q"]] - mean])
            ax.errorbar(xs, mean, yerr=err, marker="o", capsize=3, linewidth=0.8, label=names[series])
        for q in references:
            ax.axhline(q.mean, color="0.35", linestyle="--", linewidth=1, label=f"{names[q.label]} (untuned)")
            ax.axhspan(q.ci_low, q.ci_high, color="0.5", alpha=0.12, linewidth=0)
        _score_ylim(ax, [v for _, _, q in points for v in (q.ci_low, q.ci_high)]
                    + [v for q in references for v in (q.ci_low, q.ci_high)])
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks, [f"{r:g}" for r in ranks])
        ax.minorticks_off()
        ax.set_xlabel("LoRA rank r (log scale)")
        ax.set_ylabel(f"{metric_name(metric)} (mean, 95% CI)")
        ax.set_title(_wrap(f"{metric_name(metric)} at each LoRA rank", 4.0, STYLE["axes.titlesize"]))
        _legend_outside(fig, *ax.get_legend_handles_labels())
    return _save(fig, out_dir, name, f"Mean {metric_name(metric)} at each LoRA rank with its bootstrap 95% CI (seeds "
                                     "× items when there are several seeds); a thin line joins one series' means "
                                     "(nothing is measured between ranks); the dashed line and grey band: an untuned "
                                     "arm's mean and CI.")


# Where a point's label may go, in offset points from it (dx, dy, ha, va): the first that overlaps nothing wins.
_LABEL_PLACES = [(5, 4, "left", "bottom"), (5, -4, "left", "top"), (-5, 4, "right", "bottom"),
                 (-5, -4, "right", "top"), (0, 9, "center", "bottom"), (0, -9, "center", "top"),
                 (9, 0, "left", "center"), (-9, 0, "right", "center"), (8, 16, "left", "bottom"),
                 (-8, -16, "right", "top"), (8, -16, "left", "top"), (-8, 16, "right", "bottom")]
_MARK_PX = 5.0  # half the box a point's marker is kept clear in


def _boxes_overlap(a: Bbox, b: Bbox) -> bool:
    return min(a.x1, b.x1) > max(a.x0, b.x0) and min(a.y1, b.y1) > max(a.y0, b.y0)


def _place_labels(fig: Figure, ax, points: Sequence[tuple[float, float, str]], fontsize: float = 7.0) -> None:
    """Label each point at the first of `_LABEL_PLACES` where its text overlaps no other label and no marker
    and stays inside the axes. Placed after the layout is done (the labels take no part in it), so the
    positions measured are the ones saved."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    marks = [Bbox.from_bounds(px - _MARK_PX, py - _MARK_PX, 2 * _MARK_PX, 2 * _MARK_PX)
             for px, py in ax.transData.transform([(x, y) for x, y, _ in points])]
    placed: list[Bbox] = []
    for x, y, text in points:
        chosen = None
        for dx, dy, ha, va in _LABEL_PLACES:
            note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                               fontsize=fontsize, annotation_clip=False)
            note.set_in_layout(False)
            box = note.get_window_extent(renderer)
            inside = box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1
            if inside and not any(_boxes_overlap(box, other) for other in [*placed, *marks]):
                chosen = box
                break
            note.remove()
        if chosen is None:  # nowhere free: the first place, which the layout check reports
            dx, dy, ha, va = _LABEL_PLACES[0]
            note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                               fontsize=fontsize, annotation_clip=False)
            note.set_in_layout(False)
            chosen = note.get_window_extent(renderer)
        placed.append(chosen)


def stand_in_arms(study: Study) -> set[str]:
    """Arms served by an endpoint whose spec carries a `note` (a local stand-in for the model it names)."""
    return {e["name"] for e in study.endpoints if e.get("role") == "contestant" and e.get("note")}


def pareto_front(study: Study, table: pd.DataFrame, metric: str, out_dir: Path, *,
                 price_per_device_hour: float | None = None, confidence: float = 0.95, seed: int = 0,
                 name: str = "pareto_front") -> FigureFiles:
    """Quality against cost per 1K calls (or device-seconds per item when no price is given), both with CIs;
    each arm marked Pareto-optimal, dominated or not distinguishable by `analysis.front.front_status`.

    The x axis is per item, never per call: a batched local call answers a whole batch and an endpoint call one
    item, so per-call latencies are not comparable (each label says how many items a call answered).
    """
    if table["cost_per_1k_calls"].notna().sum() >= 2:
        x_col, x_label = "cost_per_1k_calls", "cost per 1K calls ($; local arms: device time × price)"
    else:
        x_col, x_label = "device_s_per_item", "device-seconds per item (a call's time shared by its items)"
    spec = score_spec(metric)
    if spec.descriptive:
        return _skip(name, f"{metric} is descriptive (neither direction is better): no quality to trade off")
    data = table.dropna(subset=[x_col, "quality"]).reset_index(drop=True)
    if len(data) < 2:
        return _skip(name, f"fewer than two arms with both {metric} and {x_label}")
    options = {"confidence": confidence, "seed": seed}
    costs = [front.cost_interval(study.rows(arm), price_per_device_hour, **options) if x_col == "cost_per_1k_calls"
             else front.device_s_interval(study.rows(arm), **options) for arm in data["arm"]]
    status = front.front_status(costs, list(zip(data["quality"], data["quality_ci_low"], data["quality_ci_high"])),
                                higher_is_better=spec.direction == HIGHER)
    stand_ins = stand_in_arms(study)
    is_stand_in = [study.rows(arm)["arm"].iloc[0] in stand_ins for arm in data["arm"]]
    names = short_labels(data["arm"])
    per_call = data["items_per_call"].to_numpy(float)
    show_per_call = len({round(v, 1) for v in per_call if np.isfinite(v)}) > 1
    x = data[x_col].to_numpy(float)
    y = data["quality"].to_numpy(float)
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(6.0, 3.6)
        ax = axes[0, 0]
        x_low = np.array([c.low if c.known else xi for c, xi in zip(costs, x)])
        x_high = np.array([c.high if c.known else xi for c, xi in zip(costs, x)])
        xerr = np.vstack([np.clip(x - x_low, 0, None), np.clip(x_high - x, 0, None)])
        yerr = np.vstack([y - data["quality_ci_low"].to_numpy(float), data["quality_ci_high"].to_numpy(float) - y])
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor="0.65", elinewidth=1, capsize=2)
        for i in range(len(data)):
            colour = FRONT_COLOURS[status[i]]
            ax.scatter([x[i]], [y[i]], marker="D" if is_stand_in[i] else "o", s=36, zorder=4,
                       facecolor="white" if status[i] == front.TIED else colour, edgecolor=colour, linewidths=1.5)
        best = [i for i in np.argsort(x) if status[i] == front.OPTIMAL]
        if len(best) >= 2:
            ax.step(x[best], y[best], where="post", color=FRONT_COLOURS[front.OPTIMAL], alpha=0.5, linewidth=1)
        _score_ylim(ax, [*data["quality_ci_low"], *data["quality_ci_high"]])
        _few_ticks(ax.xaxis)
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{metric_name(metric)} (mean, 95% CI)")
        ax.set_title(_wrap(f"{'cost' if x_col == 'cost_per_1k_calls' else 'speed'}–quality trade-off "
                           f"({metric_name(metric)})", 4.2, STYLE["axes.titlesize"]))
        handles = [matplotlib.lines.Line2D([], [], linestyle="none", marker="o", markersize=6,
                                           markerfacecolor="white" if s == front.TIED else FRONT_COLOURS[s],
                                           markeredgecolor=FRONT_COLOURS[s], label=s)
                   for s in FRONT_COLOURS if s in status]
        if any(is_stand_in):
            handles.append(matplotlib.lines.Line2D([], [], linestyle="none", marker="D", markersize=6,
                                                   markerfacecolor="white", markeredgecolor="0.3",
                                                   label="stand-in endpoint"))
        _legend_outside(fig, handles, [h.get_label() for h in handles], below=False)
        labels = [names[arm] + (" (stand-in)" if stand_in else "")
                  + (f", {calls:g}/call" if show_per_call and np.isfinite(calls) else "")
                  for arm, stand_in, calls in zip(data["arm"], is_stand_in, per_call)]
        _place_labels(fig, ax, list(zip(x, y, labels)))
    unknown = [names[arm] for arm, c in zip(data["arm"], costs) if not c.known]
    caption = (f"Mean {metric_name(metric)} (95% CI) against {x_label}, with the cost's 95% CI from resampling each "
               "arm's calls (timings vary from call to call; drift between runs on a shared machine is not in it). "
               "Dominated: another arm is at least as good and as cheap, and tells apart from it on cost or quality "
               "(intervals apart); not distinguishable (hollow): undominated, but its cost and quality intervals both "
               "overlap another undominated arm's, so the data do not rank them"
               + (f"; lower {metric_name(metric)} is better" if spec.direction == LOWER else "")
               + (f". Too few calls to measure the cost's noise: {', '.join(unknown)}." if unknown else ".")
               + (" Each label gives the items one call answered (a batched local call answers many, an endpoint "
                  "call one); cost and time are per item." if show_per_call else "")
               + (" Diamonds: stand-in endpoints (see Endpoints), not the model they stand for." if any(is_stand_in)
                  else ""))
    return _save(fig, out_dir, name, caption)


def paired_seed_dots(study: Study, comparisons: Sequence[Comparison], out_dir: Path, *,
                     name: str = "paired_seeds", max_panels: int = 8) -> FigureFiles:
    """Per seed, arm B's and arm A's mean side by side, joined: does every seed move the same way? One panel per
    comparison that has two or more seeds, in the order given (the report gives its question's first)."""
    comparisons = list(comparisons)
    if not comparisons:
        return _skip(name, "no comparisons to draw")
    comparisons = [c for c in comparisons if c.n_seeds >= 2][:max_panels]
    if not comparisons:
        return _skip(name, "one seed per comparison: nothing to pair across seeds (each Δ is in its Δ figure)")
    names = short_labels([x for c in comparisons for x in (c.a, c.b)])
    cols = min(4, len(comparisons))
    rows = math.ceil(len(comparisons) / cols)
    seeds = sorted({int(s) for c in comparisons for label in (c.a, c.b) for s in study.seeds(label)})
    palette = matplotlib.colormaps["tab10"]
    colours = {s: palette(i % 10) for i, s in enumerate(seeds)}
    markers = {s: "osD^v<>ph"[i % 9] for i, s in enumerate(seeds)}
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(2.5 * cols + 0.6, 2.8 * rows + 0.5, nrows=rows, ncols=cols, sharey=True)
        for ax in axes.flat[len(comparisons):]:
            ax.set_visible(False)
        drawn: list[float] = []
        legend: dict[str, object] = {}
        for ax, c in zip(axes.flat, comparisons):
            column = SCORE_PREFIX + c.metric
            means = {label: study.rows(label).groupby("seed")[column].mean() for label in (c.b, c.a)}
            for s in sorted(set(means[c.a].index) & set(means[c.b].index)):
                ys = [means[c.b][s], means[c.a][s]]
                drawn += ys
                line, = ax.plot([0, 1], ys, color=colours[int(s)], marker=markers[int(s)], alpha=0.85, linewidth=1)
                legend.setdefault(f"seed {int(s)}", line)
            ax.set_xticks([0, 1], [_wrap(names[c.b], 1.0, 7), _wrap(names[c.a], 1.0, 7)], fontsize=7)
            ax.set_xlim(-0.35, 1.35)
            ax.set_title(_minus(f"Δ {c.diff:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}]"), fontsize=7.5)
            ax.set_xlabel(c.outcome or c.verdict, fontsize=7)
        _score_ylim(axes.flat[0], drawn)  # the panels share y
        for ax in axes[:, 0]:
            ax.set_ylabel(f"{metric_name(comparisons[0].metric)}\n(mean of one seed)")
        _legend_outside(fig, list(legend.values()), list(legend), below=True)
    return _save(fig, out_dir, name, "Each seed's mean under both arms of a comparison, joined per seed (B left, A "
                                     "right); the panel's title is the pooled Δ = A − B with its 95% CI, its x label "
                                     "the outcome.")


def delta_panels(comparisons: Sequence[Comparison]) -> dict[str, list[Comparison]]:
    """The panels of a delta-bar figure by the metrics' declared ranges: every score declared in [0, 1] on one
    axis (`UNIT_PANEL`), each other metric (a word count, a grade on a rubric's scale) on its own axis: on one
    axis a count would flatten every score to nothing. Keys are the panels' names, in drawing order."""
    panels: dict[str, list[Comparison]] = {}
    for c in sorted(comparisons, key=lambda c: not score_spec(c.metric).unit_interval):  # stable: order kept
        panels.setdefault(UNIT_PANEL if score_spec(c.metric).unit_interval else c.metric, []).append(c)
    return panels


def delta_bars(comparisons: Sequence[Comparison], out_dir: Path, *, name: str = "deltas",
               title: str = "difference vs baseline") -> FigureFiles:
    """Horizontal bars of each Δ = A − B with its CI, coloured by outcome (quantisation, forgetting, ...), on the
    panels of `delta_panels`. When every bar is one pair of arms, the pair is named once, on the x axis."""
    comparisons = list(comparisons)
    if not comparisons:
        return _skip(name, "no comparisons to draw")
    metrics = list(dict.fromkeys(c.metric for c in comparisons))
    panels = delta_panels(comparisons)
    names = short_labels([x for c in comparisons for x in (c.a, c.b)])
    one_pair = len({(c.a, c.b) for c in comparisons}) == 1
    pair = lambda c: f"{names[c.a]} − {names[c.b]}"  # noqa: E731

    def label(c: Comparison) -> str:
        parts = ([] if one_pair and len(metrics) > 1 else [pair(c)]) + ([metric_name(c.metric)] if len(metrics) > 1
                                                                         else [])
        return "\n".join(_wrap(p, 2.2, 7.5) for p in parts)

    lines = [label(c).count("\n") + 1 for c in comparisons]
    width = 6.0
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(width, 0.3 * sum(lines) + 0.2 * len(comparisons) + 1.1 * len(panels) + 1.0,
                            nrows=len(panels), gridspec_kw={"height_ratios": [len(g) + 1 for g in panels.values()]})
        for ax, (panel, group) in zip(axes[:, 0], panels.items()):
            y = np.arange(len(group))[::-1]
            diffs = np.array([c.diff for c in group])
            err = np.vstack([diffs - [c.ci_low for c in group], [c.ci_high for c in group] - diffs])
            ax.barh(y, diffs, color=[VERDICT_COLOURS.get(c.outcome, "0.5") for c in group], alpha=0.85, height=0.6)
            ax.errorbar(diffs, y, xerr=err, fmt="none", ecolor="black", elinewidth=1, capsize=3)
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_yticks(y, [label(c) for c in group], fontsize=7.5)
            ax.set_ylim(-0.6, len(group) - 0.4)
            _few_ticks(ax.xaxis)
            shown = {c.metric for c in group}
            unit = metric_name(next(iter(shown))) if len(shown) == 1 else panel.replace("scores", "score")
            between = pair(group[0]) if one_pair else "A − B"
            # "Δ Δ log-lik" reads as one Δ; a long metric name is wrapped, never cut at the figure's edge.
            ax.set_xlabel(_wrap(f"Δ {unit.removeprefix('Δ ')} ({between}, 95% CI)", 3.6, STYLE["axes.labelsize"]))
        # Over the figure, not the axes: long arm labels leave the axes narrow, and its title would be cut.
        fig.suptitle(_wrap(_readable(title, metrics), width - 0.3, STYLE["axes.titlesize"]),
                     fontsize=STYLE["axes.titlesize"])
        outcomes = [v for v in VERDICT_COLOURS if any(c.outcome == v for c in comparisons)]
        _legend_outside(fig, [matplotlib.patches.Patch(color=VERDICT_COLOURS[v]) for v in outcomes], outcomes,
                        below=True)
    panels_note = ("; scores declared in [0, 1] share a panel, every other metric has its own." if len(panels) > 1
                   else ".")
    return _save(fig, out_dir, name, f"{_readable(title, metrics)}: bars are Δ = A − B, whiskers the 95% CI; colour is "
                                     "the outcome (after Holm adjustment, against the report's tolerance)"
                                     f"{panels_note}")


def factor_levels(means: Sequence[LevelMean], factor: Factor, metric: str, out_dir: Path, *,
                  others: Sequence[Factor] = (), name: str | None = None) -> FigureFiles:
    """Every level of a factor that has a complete trial, with its CI: one panel averaged over the other factors,
    then one panel per second factor with two or more levels drawn, one series per level of it (parallel series:
    no interaction). Categorical levels are points with whiskers; a numeric factor is drawn on its scale (log2
    when its levels are all positive), its means joined by a thin line. The reference level is marked."""
    name = name or f"levels_{slug(factor.name)}"
    mine = [m for m in means if m.factor == factor.name]
    pooled = [m for m in mine if m.by is None]
    levels = [v for v in factor.levels if any(same_level(m.level, v) for m in pooled)]
    missing = [format_value(v) for v in factor.levels if not any(same_level(v, w) for w in levels)]
    if len(levels) < 2:
        have = f"only {factor.name}={format_value(levels[0])} has" if levels else "no level has"
        return _skip(name, f"{have} a complete trial: no level to compare with (not run or failed: "
                           f"{', '.join(missing)})")
    # A panel per second factor only where it shows two of its levels: one level repeats the pooled panel.
    panels: list[str | None] = [None] + [
        by for by in dict.fromkeys(m.by for m in mine if m.by is not None)
        if len({_level_key(m.by_level) for m in mine if m.by == by}) >= 2]
    arms = list(dict.fromkeys(m.arm for m in mine))
    position = (lambda v: float(v)) if factor.numeric else (  # noqa: E731
        lambda v: float(next(i for i, w in enumerate(levels) if same_level(v, w))))
    rest = [g for g in others if g.name != factor.name]
    legends = sum(1 for by in panels if by is not None or len(arms) > 1)
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(3.2 * len(panels) + 1.3 * legends + 0.4, 3.5, ncols=len(panels), sharey=True)
        drawn: list[float] = []
        for ax, by in zip(axes.flat, panels):
            groups: dict[tuple, list[LevelMean]] = {}
            for m in mine:
                if m.by == by:
                    groups.setdefault((m.arm, _level_key(m.by_level)), []).append(m)
            for k, ((arm, _), group) in enumerate(groups.items()):
                group = sorted(group, key=lambda m: factor.index(m.level))
                # Series of one panel are nudged apart so their whiskers do not hide each other.
                nudge = 0.06 * (k - (len(groups) - 1) / 2)
                xs = _nudged(np.array([position(m.level) for m in group]), nudge, factor, len(levels))
                ys = np.array([m.quality.mean for m in group])
                err = np.vstack([ys - [m.quality.ci_low for m in group], [m.quality.ci_high for m in group] - ys])
                series = ", ".join(([arm] if len(arms) > 1 else [])
                                   + ([short_params({by: format_value(group[0].by_level)}, [by])] if by else []))
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=series or None,
                            linestyle="-" if factor.numeric else "none", linewidth=0.8)
                drawn += [v for m in group for v in (m.quality.ci_low, m.quality.ci_high)]
            if any(same_level(factor.reference, v) for v in levels):
                ax.axvline(position(factor.reference), color="0.4", linestyle=":", linewidth=1)
            if factor.log_scale:
                ax.set_xscale("log", base=2)
            elif not factor.numeric:
                ax.set_xlim(-0.5, len(levels) - 0.5)
            elif len(levels) > 6:
                _few_ticks(ax.xaxis)
            if not factor.numeric or factor.log_scale or len(levels) <= 6:
                ax.set_xticks([position(v) for v in levels], [format_value(v) for v in levels])
            ax.minorticks_off()
            ax.set_xlabel(_wrap(f"{factor.name}" + (" (log scale)" if factor.log_scale else "")
                                + (f"; no complete trial at {', '.join(missing)}" if missing else ""),
                                3.0, STYLE["axes.labelsize"]))
            if by is not None:
                ax.set_title(f"one series per {by}", fontsize=8)
            elif rest:
                ax.set_title("averaged over the other factors", fontsize=8)
            second = next((g for g in others if g.name == by), None)
            absent = [format_value(v) for v in second.levels
                      if not any(m.by == by and same_level(m.by_level, v) for m in mine)] if second else []
            if ax.get_legend_handles_labels()[0]:
                # Beside its own panel, outside the axes: it covers no data.
                ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False,
                          fontsize=LEGEND_FONT, title_fontsize=LEGEND_FONT,
                          title=_wrap(f"none complete at {by}={', '.join(absent)}", 1.2, LEGEND_FONT)
                          if absent else None)
        _score_ylim(axes.flat[0], drawn)
        axes[0, 0].set_ylabel(f"{metric_name(metric)} (mean, 95% CI)")
        fig.suptitle(_wrap(f"{metric_name(metric)} at each level of {factor.name} (dotted: reference "
                           f"{format_value(factor.reference)})", fig.get_figwidth() - 0.3, STYLE["axes.titlesize"]),
                     fontsize=STYLE["axes.titlesize"])
    caption = (f"Mean {metric_name(metric)} at every level of {factor.name} that has a complete trial, with bootstrap "
               "95% CIs (seeds × items)"
               + ("; left: averaged over the other factors; then one series per level of a second factor. Series that "
                  "are not parallel are an interaction." if len(panels) > 1 else ".")
               + (f" No complete trial at {factor.name}={', '.join(missing)}." if missing else ""))
    return _save(fig, out_dir, name, caption)


def _nudged(xs: np.ndarray, nudge: float, factor: Factor, n_levels: int) -> np.ndarray:
    if factor.log_scale:
        return xs * 2 ** nudge
    if factor.numeric:
        levels = np.asarray(factor.levels, float)
        return xs + nudge * 0.2 * float(levels.max() - levels.min()) / max(n_levels - 1, 1)
    return xs + nudge


def _level_key(value) -> str:
    return "" if value is None else format_value(value)


def forest(rows: Sequence[tuple[str, Comparison]], out_dir: Path, *, name: str = "summary_forest",
           title: str = "every experiment's primary comparisons") -> FigureFiles:
    """A forest plot of (experiment, comparison) rows: each Δ = A − B as a point with its CI whisker, coloured by
    outcome (hollow: the report predates outcomes), over a grey band of ±its tolerance (an equivalence claim needs
    the whisker inside the band). One panel per metric range (`delta_panels`); within a panel the rows are grouped
    under their experiment's name in the order given, each experiment's arms by what tells them apart."""
    rows = list(rows)
    if not rows:
        return _skip(name, "no comparisons to draw")
    by_experiment: dict[str, list[Comparison]] = {}
    for experiment, c in rows:
        by_experiment.setdefault(experiment, []).append(c)
    names = {e: short_labels([x for c in cs for x in (c.a, c.b)]) for e, cs in by_experiment.items()}
    panels: dict[str, list[tuple[str, Comparison]]] = {}
    for panel, group in delta_panels([c for _, c in rows]).items():
        members = {id(c) for c in group}
        panels[panel] = [(e, c) for e, c in rows if id(c) in members]
    label_in = 3.0  # inches of row labels: the rest of the width is the axes'

    def layout(group: list[tuple[str, Comparison]]) -> list[tuple[str, Comparison | None]]:
        """The panel's lines top to bottom: each experiment's name (a line without a point), then its rows."""
        lines: list[tuple[str, Comparison | None]] = []
        for e, c in group:
            if not lines or lines[-1][0] != e:
                lines.append((e, None))
            lines.append((e, c))
        return lines

    def main_metric(lines: list[tuple[str, Comparison | None]]) -> str:
        """The panel's most common metric: the x axis names it, a row on another metric says its own."""
        counts = pd.Series([c.metric for _, c in lines if c is not None]).value_counts(sort=True)
        return str(counts.index[0])

    def tick(e: str, c: Comparison | None, main: str) -> str:
        if c is None:
            return _wrap(e, label_in, 7.5)
        return _wrap(f"{names[e][c.a]} − {names[e][c.b]}" + (f" · {metric_name(c.metric)}" if c.metric != main
                                                            else ""), label_in, 7)

    laid = {panel: layout(group) for panel, group in panels.items()}
    mains = {panel: main_metric(lines) for panel, lines in laid.items()}
    ticks = {panel: [tick(e, c, mains[panel]) for e, c in lines] for panel, lines in laid.items()}
    # A row is as tall as its label's lines: a wrapped label never runs into the next row's.
    heights = {panel: [t.count("\n") + 1 for t in labels] for panel, labels in ticks.items()}
    width = 7.0
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(width, 0.2 * sum(map(sum, heights.values())) + 1.0 * len(panels) + 0.8,
                            nrows=len(panels), gridspec_kw={"height_ratios": [sum(h) + 2 for h in heights.values()]})
        for ax, (panel, lines) in zip(axes[:, 0], laid.items()):
            h = np.array(heights[panel], dtype=float)
            y = h.sum() - (np.cumsum(h) - h / 2)  # centres, top to bottom
            shown = {c.metric for _, c in lines if c is not None}
            for yi, (e, c) in zip(y, lines):
                if c is None:
                    continue
                if math.isfinite(c.tolerance):
                    ax.add_patch(matplotlib.patches.Rectangle((-c.tolerance, yi - 0.4), 2 * c.tolerance, 0.8,
                                                              color="0.85", linewidth=0, zorder=0))
                ax.errorbar([c.diff], [yi], xerr=[[c.diff - c.ci_low], [c.ci_high - c.diff]], fmt="none",
                            ecolor="0.25", elinewidth=1, capsize=2, zorder=2)
                ax.scatter([c.diff], [yi], s=20, zorder=3, edgecolors="black", linewidths=0.5,
                           c=[VERDICT_COLOURS.get(c.outcome, "white")])
            ax.axvline(0, color="black", linewidth=0.8, zorder=1)
            ax.set_yticks(y, ticks[panel], fontsize=7)
            for tick, (_, c) in zip(ax.get_yticklabels(), lines):
                if c is None:
                    tick.set_fontweight("bold")
                    tick.set_fontsize(7.5)
            ax.tick_params(axis="y", length=0)
            ax.set_ylim(-0.2, h.sum() + 0.2)
            _few_ticks(ax.xaxis, nbins=4)
            unit = metric_name(mains[panel]) + (" (other scores in [0, 1] as named)" if len(shown) > 1 else "")
            band = "; grey: ±tolerance" if any(c is not None and math.isfinite(c.tolerance) for _, c in lines) else ""
            ax.set_xlabel(_wrap(f"Δ {unit.removeprefix('Δ ')}: A − B, 95% CI{band}", width - label_in
                                - 0.5, STYLE["axes.labelsize"]))
        fig.suptitle(_wrap(title, width - 0.3, STYLE["axes.titlesize"]), fontsize=STYLE["axes.titlesize"])
        outcomes = {v: VERDICT_COLOURS[v] for v in VERDICT_COLOURS if any(c.outcome == v for _, c in rows)}
        if any(c.outcome not in VERDICT_COLOURS for _, c in rows):
            outcomes["no outcome (an older report)"] = "white"
        _legend_outside(fig, [matplotlib.lines.Line2D([], [], marker="o", linestyle="", markerfacecolor=colour,
                                                      markeredgecolor="black", markeredgewidth=0.5)
                              for colour in outcomes.values()], list(outcomes), below=True)
    return _save(fig, out_dir, name, f"{title[0].upper()}{title[1:]}: each point is Δ = A − B with its 95% CI, "
                                     "coloured by its outcome (Holm-adjusted within its report, against that "
                                     "report's tolerance, the grey band); panels by metric range.")


def capability_levels(comparisons: Sequence[Comparison], chance: dict[str, float], out_dir: Path, *,
                      name: str = "levels_forgetting") -> FigureFiles:
    """Each lm-eval task's accuracy for the base and each adapter (points with a 95% binomial CI), beside the
    task's chance accuracy (a dashed mark): is a score, or a change in it, above guessing at all? Drawn from the
    forgetting comparisons (A an adapter, B the base) on the tasks `chance` knows."""
    comparisons = [c for c in comparisons if c.metric in chance]
    if not comparisons:
        return _skip(name, "no multiple-choice lm-eval task to draw")
    tasks = list(dict.fromkeys(c.metric for c in comparisons))
    arms = list(dict.fromkeys(c.a for c in comparisons))
    names = short_labels([*arms, comparisons[0].b])
    series = [("base", None)] + [(names[a], a) for a in arms]
    palette = matplotlib.colormaps["tab10"]
    offsets = np.linspace(0.18, -0.18, len(series)) if len(series) > 1 else np.zeros(1)  # the base on top
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(5.6, 0.5 * len(tasks) + 1.6)
        ax = axes[0, 0]
        y = np.arange(len(tasks))[::-1]
        handles, labels = [], []
        for i, (label, arm) in enumerate(series):
            xs, ys, errs = [], [], []
            for yi, task in zip(y, tasks):
                c = next((c for c in comparisons if c.metric == task and (arm is None or c.a == arm)), None)
                if c is None:
                    continue
                p = c.mean_b if arm is None else c.mean_a
                n = c.n * max(1, c.n_seeds if arm is not None else 1)
                xs.append(p)
                ys.append(yi + offsets[i])
                errs.append(1.96 * math.sqrt(max(p * (1 - p), 0.0) / max(n, 1)))
            handle = ax.errorbar(xs, ys, xerr=errs, fmt="o" if arm is not None else "s", capsize=2, markersize=4.5,
                                 color="0.35" if arm is None else palette(i - 1), linewidth=0, elinewidth=1,
                                 markerfacecolor="white" if arm is None else None)
            handles.append(handle)
            labels.append(label)
        for yi, task in zip(y, tasks):
            ax.plot([chance[task]] * 2, [yi - 0.35, yi + 0.35], color="#b2182b", linestyle="--", linewidth=1.2)
        handles.append(matplotlib.lines.Line2D([], [], color="#b2182b", linestyle="--", linewidth=1.2))
        labels.append("chance (1 / choices)")
        ax.set_yticks(y, [_wrap(metric_name(t), 1.6, 8) for t in tasks], fontsize=8)
        ax.set_ylim(-0.6, len(tasks) - 0.4)
        ax.set_xlim(0, 1)
        _few_ticks(ax.xaxis)
        ax.set_xlabel("accuracy (95% binomial CI)")
        ax.set_title("general capabilities against chance")
        _legend_outside(fig, handles, labels, below=True)
    return _save(fig, out_dir, name, "Each lm-eval task's accuracy for the base and the adapter(s), with a 95% "
                                     "binomial CI on the items (and seeds) behind it; the dashed mark is the task's "
                                     "chance accuracy, 1 / its number of choices averaged over its items.")
