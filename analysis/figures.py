"""Publication-style figures (PNG + PDF): labelled axes with units, CIs drawn, nothing left blank.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot global state, no GUI backend),
so they render the same in a notebook, a CLI and a test. Every function returns a `FigureFiles`:
the paths it wrote, or none and the reason it skipped (the study lacks the data it needs).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.patches
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.compare import Comparison, Quality
from analysis.contrasts import Factor, LevelMean, slug
from analysis.load import SCORE_PREFIX, Study
from harness.evaluation.metrics import HIGHER, LOWER, display_name, score_spec
from harness.stats.factors import format_value, same_level

STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 7.5, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "grid.linewidth": 0.5, "lines.linewidth": 1.4, "savefig.dpi": 200,
    "pdf.fonttype": 42,  # TrueType, not Type 3, in PDFs: editable text, accepted by ACM/IEEE checks
}
# A descriptive metric's "higher" and "lower" get colours that say neither good nor bad.
VERDICT_COLOURS = {"better": "#1b7837", "worse": "#b2182b", "higher": "#2166ac", "lower": "#8073ac",
                   "no detectable difference": "#7f7f7f"}
UNIT_PANEL = "scores in [0, 1]"
RANK_PARAM = "lora.r"


@dataclass(frozen=True)
class FigureFiles:
    """What one figure function produced: its files, or why it produced none."""

    name: str
    paths: tuple[Path, ...] = ()
    skipped: str | None = None
    caption: str = ""

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
            fig.savefig(path)
            paths.append(path)
    return FigureFiles(name, tuple(paths), caption=caption)


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


def loss_curves(study: Study, out_dir: Path, *, name: str = "loss_curves") -> FigureFiles:
    """Training loss against step, one line per trial (colour: config, line style: seed)."""
    log = study.train_log
    if log.empty or "loss" not in log or "step" not in log or log["loss"].notna().sum() == 0:
        return _skip(name, "no training loss logged (train_log.jsonl) in any trial")
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(5.5, 3.4)
        ax = axes[0, 0]
        configs = sorted(log["config"].fillna("").unique(), key=str)
        palette = matplotlib.colormaps["tab10" if len(configs) <= 10 else "viridis"]
        colours = {c: palette(i if len(configs) <= 10 else 0.85 * i / (len(configs) - 1)) for i, c in enumerate(configs)}
        seeds = sorted(log["seed"].dropna().unique())
        styles = {s: ls for s, ls in zip(seeds, ["-", "--", ":", "-."] * (len(seeds) // 4 + 1))}
        for trial, rows in log.groupby("trial"):
            rows = rows.dropna(subset=["loss"]).sort_values("step")
            config, seed, status = rows["config"].iloc[0], rows["seed"].iloc[0], rows["status"].iloc[0]
            label = ((f"{config} · seed {seed}" if config else f"seed {seed}")
                     + ("" if status == "complete" else f" ({status})"))
            ax.plot(rows["step"], rows["loss"], color=colours[config], linestyle=styles.get(seed, "-"),
                    alpha=1.0 if status == "complete" else 0.4, label=label)
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss (cross-entropy, nats/token)")
        ax.set_title(f"{study.name}: training loss per trial")
        n_trials = log["trial"].nunique()
        if n_trials <= 16 and max(len(str(c)) for c in configs) > 30:
            # Several factors make long labels: inside the axes they would squeeze the plot to nothing.
            fig.set_figheight(3.4 + 0.15 * n_trials)
            fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", frameon=False, fontsize=6.5)
        elif n_trials <= 16:
            ax.legend(frameon=False, ncols=2 if n_trials > 6 else 1)
    return _save(fig, out_dir, name, ("Training loss of each trial's first training (SFT) per step; colour is the grid "
                                     "point, line style the seed. A continuing stage (DPO, GRPO) logs to its own "
                                     "file in the trial (dpo_log.jsonl, grpo_log.jsonl)."))


def quality_vs_rank(study: Study, qualities: Sequence[Quality], metric: str, out_dir: Path, *,
                    name: str = "quality_vs_rank") -> FigureFiles:
    """Quality against LoRA rank (log2 axis) with CI bands; untuned arms as horizontal reference bands."""
    if RANK_PARAM not in study.varying_params:
        return _skip(name, f"the study does not vary '{RANK_PARAM}'")
    points = []
    for q in qualities:
        params = study.params_of(q.label)
        if RANK_PARAM in params and q.metric == metric:
            series = ",".join(f"{k}={v}" for k, v in params.items() if k != RANK_PARAM)
            points.append((study.rows(q.label)["arm"].iloc[0], series, float(params[RANK_PARAM]), q))
    if len({p[2] for p in points}) < 2:
        return _skip(name, f"fewer than two '{RANK_PARAM}' values among complete trials")
    references = [q for q in qualities if q.metric == metric and RANK_PARAM not in study.params_of(q.label)]
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure()
        ax = axes[0, 0]
        ranks = sorted({p[2] for p in points})
        for (arm, series), group in pd.DataFrame(points, columns=["arm", "series", "rank", "q"]).groupby(
                ["arm", "series"], sort=True):
            group = group.sort_values("rank")
            mean = [q.mean for q in group["q"]]
            line, = ax.plot(group["rank"], mean, marker="o", label=f"{arm}" + (f" [{series}]" if series else ""))
            ax.fill_between(group["rank"], [q.ci_low for q in group["q"]], [q.ci_high for q in group["q"]],
                            color=line.get_color(), alpha=0.2, linewidth=0)
        for q in references:
            line = ax.axhline(q.mean, color="0.35", linestyle="--", linewidth=1, label=f"{q.label} (untuned)")
            ax.axhspan(q.ci_low, q.ci_high, color="0.5", alpha=0.12, linewidth=0)
        _score_ylim(ax, [v for _, _, _, q in points for v in (q.ci_low, q.ci_high)]
                    + [v for q in references for v in (q.ci_low, q.ci_high)])
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks, [f"{r:g}" for r in ranks])
        ax.minorticks_off()
        ax.set_xlabel("LoRA rank r (log scale)")
        ax.set_ylabel(f"{display_name(metric)} (mean over items)")
        ax.set_title(f"{display_name(metric)} vs LoRA rank, 95% CI bands")
        ax.legend(frameon=False)
    return _save(fig, out_dir, name, f"Mean {metric} against LoRA rank; shaded: bootstrap 95% CI "
                                     "(seeds × items when there are several seeds).")


def pareto_front(table: pd.DataFrame, metric: str, out_dir: Path, *, name: str = "pareto_front") -> FigureFiles:
    """Quality against cost per 1K calls (or device-seconds per item when no price is given); the front drawn.

    Without prices the x axis is device time per item, not latency per call: a batched arm's call answers
    a whole batch, so its per-call latency is not comparable with a one-item-per-call arm's.
    """
    if table["cost_per_1k_calls"].notna().sum() >= 2:
        x_col, x_label = "cost_per_1k_calls", "cost per 1K calls ($)"
    else:
        x_col, x_label = "device_s_per_item", "device seconds per item (batch time shared by its items)"
    spec = score_spec(metric)
    if spec.descriptive:
        return _skip(name, f"{metric} is descriptive (neither direction is better): no quality to trade off")
    data = table.dropna(subset=[x_col, "quality"])
    if len(data) < 2:
        return _skip(name, f"fewer than two arms with both {metric} and {x_label}")
    # An arm is on the front when no other arm is at least as cheap and at least as good, and better in one;
    # "good" by the metric's declared direction.
    x, y = data[x_col].to_numpy(float), data["quality"].to_numpy(float)
    good = y if spec.direction == HIGHER else -y
    on_front = np.array([not np.any((x <= x[i]) & (good >= good[i]) & ((x < x[i]) | (good > good[i])))
                         for i in range(len(x))])
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure()
        ax = axes[0, 0]
        yerr = np.vstack([y - data["quality_ci_low"].to_numpy(float), data["quality_ci_high"].to_numpy(float) - y])
        ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor="0.6", elinewidth=1, capsize=2)
        ax.scatter(x[~on_front], y[~on_front], color="0.55", zorder=3, label="dominated")
        ax.scatter(x[on_front], y[on_front], color="#d95f02", zorder=4, label="Pareto-optimal")
        order = np.argsort(x[on_front])
        ax.step(x[on_front][order], y[on_front][order], where="post", color="#d95f02", alpha=0.6)
        for xi, yi, label in zip(x, y, data["arm"]):
            ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        _score_ylim(ax, [*data["quality_ci_low"], *data["quality_ci_high"]])
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{display_name(metric)} (mean over items)")
        ax.set_title(f"{'cost' if x_col == 'cost_per_1k_calls' else 'speed'}–quality trade-off "
                     f"({display_name(metric)})")
        ax.legend(frameon=False)
    return _save(fig, out_dir, name, f"Mean {metric} (95% CI) against {x_label}; orange: arms no other arm beats "
                                     "on both" + (f" (lower {metric} is better)." if spec.direction == LOWER else "."))


def paired_seed_dots(study: Study, comparisons: Sequence[Comparison], out_dir: Path, *,
                     name: str = "paired_seeds", max_panels: int = 8) -> FigureFiles:
    """Per-seed means of B and A side by side, joined per seed: does every seed move the same way?"""
    comparisons = list(comparisons)[:max_panels]
    if not comparisons:
        return _skip(name, "no comparisons to draw")
    cols = min(4, len(comparisons))
    rows = math.ceil(len(comparisons) / cols)
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(2.2 * cols + 0.5, 2.6 * rows, nrows=rows, ncols=cols, sharey=True)
        for ax in axes.flat[len(comparisons):]:
            ax.set_visible(False)
        drawn: list[float] = []
        for ax, c in zip(axes.flat, comparisons):
            column = SCORE_PREFIX + c.metric
            means = {label: study.rows(label).groupby("seed")[column].mean() for label in (c.b, c.a)}
            seeds = sorted(set(means[c.a].index) & set(means[c.b].index))
            for s in seeds:
                ys = [means[c.b][s], means[c.a][s]]
                drawn += ys
                ax.plot([0, 1], ys, color=VERDICT_COLOURS.get(c.verdict, "0.3"), marker="o", alpha=0.8)
                ax.annotate(f"s{s}", (1, ys[1]), textcoords="offset points", xytext=(4, 0), fontsize=6, va="center")
            ax.set_xticks([0, 1], ["B", "A"])
            ax.set_xlim(-0.3, 1.4)
            ax.set_title(f"A={c.a}\nB={c.b}", fontsize=7)
            ax.set_xlabel(f"Δ={c.diff:+.3f}, {c.verdict}", fontsize=7)
        _score_ylim(axes.flat[0], drawn)  # the panels share y
        for ax in axes[:, 0]:
            ax.set_ylabel(f"{display_name(comparisons[0].metric)} (per-seed mean)")
    return _save(fig, out_dir, name, "Per-seed mean of each arm; a line joins the two arms' results for one seed.")


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
    """Horizontal bars of each Δ = A − B with its CI, coloured by verdict (quantisation, forgetting, ...),
    on the panels of `delta_panels`."""
    comparisons = list(comparisons)
    if not comparisons:
        return _skip(name, "no comparisons to draw")
    metrics = {c.metric for c in comparisons}
    panels = delta_panels(comparisons)
    groups = list(panels.values())
    # Arm labels of several factors are long: wrapped at their commas, they leave the bars room.
    label = lambda c: (textwrap.fill(f"{c.a} − {c.b}".replace(",", ", "), 50)  # noqa: E731
                       + ("" if len(metrics) == 1 else f" ({display_name(c.metric)})"))
    lines = max(label(c).count("\n") + 1 for c in comparisons)
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(5.5 if lines == 1 else 7.5, (0.3 + 0.15 * lines) * len(comparisons) + 1.2 * len(groups),
                            nrows=len(groups), gridspec_kw={"height_ratios": [len(g) + 1 for g in groups]})
        for ax, (panel, group) in zip(axes[:, 0], panels.items()):
            y = np.arange(len(group))[::-1]
            diffs = np.array([c.diff for c in group])
            err = np.vstack([diffs - [c.ci_low for c in group], [c.ci_high for c in group] - diffs])
            ax.barh(y, diffs, color=[VERDICT_COLOURS.get(c.verdict, "0.5") for c in group], alpha=0.85, height=0.6)
            ax.errorbar(diffs, y, xerr=err, fmt="none", ecolor="black", elinewidth=1, capsize=3)
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_yticks(y, [label(c) for c in group], fontsize=8 if lines == 1 else 6.5)
            shown = {c.metric for c in group}
            unit = display_name(next(iter(shown))) if len(shown) == 1 else panel.replace("scores", "score")
            ax.set_xlabel(f"Δ {unit} (A − B, 95% CI)")
        # Over the figure, not the axes: long arm labels leave the axes narrow, and its title would be cut.
        fig.suptitle(textwrap.fill(title, 70), fontsize=STYLE["axes.titlesize"])
        handles = [matplotlib.patches.Patch(color=col, label=v) for v, col in VERDICT_COLOURS.items()
                   if any(c.verdict == v for c in comparisons)]
        axes[0, 0].legend(handles=handles, frameon=False, loc="best")
    return _save(fig, out_dir, name, f"{title}: bars are Δ = A − B, whiskers the 95% CI; colour is the verdict "
                                     "after Holm adjustment" + ("; scores declared in [0, 1] share a panel, every "
                                                                "other metric has its own." if len(groups) > 1
                                                                else "."))


def factor_levels(means: Sequence[LevelMean], factor: Factor, metric: str, out_dir: Path, *,
                  others: Sequence[Factor] = (), name: str | None = None) -> FigureFiles:
    """Every level of a factor with its CI: one panel averaged over the other factors, then one panel per
    second factor with a line per level of it (parallel lines: no interaction). The reference level is
    marked; a numeric factor is drawn on its scale (log2 when its levels are all positive)."""
    name = name or f"levels_{slug(factor.name)}"
    mine = [m for m in means if m.factor == factor.name]
    panels = [None] + list(dict.fromkeys(m.by for m in mine if m.by is not None))
    panels = [by for by in panels if any(m.by == by for m in mine)]
    if not panels:
        return _skip(name, f"no level of {factor.name} has a complete trial")
    if factor.numeric:
        position = lambda v: float(v)  # noqa: E731
    else:
        position = lambda v: float(factor.index(v))  # noqa: E731
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(3.3 * len(panels) + 0.6, 3.3, ncols=len(panels), sharey=True)
        drawn: list[float] = []
        for ax, by in zip(axes.flat, panels):
            groups: dict[tuple, list[LevelMean]] = {}
            for m in mine:
                if m.by == by:
                    groups.setdefault((m.arm, _level_key(m.by_level)), []).append(m)
            for k, ((arm, _), group) in enumerate(groups.items()):
                group = sorted(group, key=lambda m: factor.index(m.level))
                # Lines of one panel are nudged apart so their error bars do not hide each other.
                nudge = 0.06 * (k - (len(groups) - 1) / 2)
                xs = _nudged(np.array([position(m.level) for m in group]), nudge, factor)
                ys = np.array([m.quality.mean for m in group])
                err = np.vstack([ys - [m.quality.ci_low for m in group], [m.quality.ci_high for m in group] - ys])
                series = arm if by is None else f"{arm}, {by}={format_value(group[0].by_level)}"
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=series)
                drawn += [v for m in group for v in (m.quality.ci_low, m.quality.ci_high)]
            ax.axvline(position(factor.reference), color="0.4", linestyle=":", linewidth=1)
            if factor.log_scale:
                ax.set_xscale("log", base=2)
            elif not factor.numeric:
                ax.set_xlim(-0.5, len(factor.levels) - 0.5)
            ticks = [position(v) for v in factor.levels]
            ax.set_xticks(ticks, [format_value(v) + ("" if any(same_level(m.level, v) for m in mine)
                                                    else "\n(no complete\ntrial)") for v in factor.levels])
            ax.minorticks_off()
            ax.set_xlabel(f"{factor.name}" + (" (log scale)" if factor.log_scale else ""))
            ax.set_title("averaged over the other factors" if by is None else f"one line per {by}", fontsize=8)
            second = next((g for g in others if g.name == by), None)
            missing = [format_value(v) for v in second.levels
                       if not any(m.by == by and same_level(m.by_level, v) for m in mine)] if second else []
            ax.legend(frameon=False, fontsize=6.5, title_fontsize=6.5,
                      title=f"no complete trial at {by}={', '.join(missing)}" if missing else None)
        _score_ylim(axes.flat[0], drawn)
        axes[0, 0].set_ylabel(f"{display_name(metric)} (mean, 95% CI)")
        fig.suptitle(f"{metric} at each level of {factor.name} (dotted: reference {format_value(factor.reference)})",
                     fontsize=STYLE["axes.titlesize"])
    return _save(fig, out_dir, name, f"Mean {metric} at every level of {factor.name} with bootstrap 95% CIs (seeds × "
                                     "items); left: averaged over the other factors; then one line per level of a "
                                     "second factor. Lines that are not parallel are an interaction.")


def _nudged(xs: np.ndarray, nudge: float, factor: Factor) -> np.ndarray:
    if factor.log_scale:
        return xs * 2 ** nudge
    if factor.numeric:
        levels = np.asarray(factor.levels, float)
        return xs + nudge * 0.2 * float(levels.max() - levels.min()) / (len(levels) - 1)
    return xs + nudge


def _level_key(value) -> str:
    return "" if value is None else format_value(value)
