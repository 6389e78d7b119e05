"""A report on W&B: its tables, figures and comparison numbers as one run in the study's group."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.report import ReportPaths


def log_report_to_wandb(report: ReportPaths, run_group: str, *, project: str | None = None,
                        mode: str | None = None) -> str | None:
    """Log the report's tables, figures and comparison numbers as one W&B run in the study's group.

    `mode` defaults to the harness rule (WANDB_MODE, else online when logged in, else offline); a no-op
    returning None when it resolves to "disabled". Returns the run id.
    """
    from harness.tracking import wandb_mode

    mode = mode or wandb_mode("auto")
    if mode == "disabled":
        return None
    import wandb

    data = json.loads(Path(report.json).read_text())
    run = wandb.init(project=project or data.get("project") or "harness", group=run_group, job_type="report",
                     name=f"{data['study']}/report", mode=mode, dir=str(Path(report.json).parent),
                     config={k: data.get(k) for k in ("metric", "baseline", "alpha", "confidence", "level",
                                                       "n_resamples", "seed", "price_per_device_hour")},
                     reinit="create_new")
    try:
        for name, files in report.tables.items():
            run.log({f"report/table/{name}": wandb.Table(dataframe=pd.read_csv(files.csv))})
        for name, fig in report.figures.items():
            if fig.png is not None:
                run.log({f"report/figure/{name}": wandb.Image(str(fig.png), caption=fig.caption)})
        run.summary.update({f"{c['family']}/{c['metric']}/{c['a']} vs {c['b']}": {
            k: c[k] for k in ("diff", "ci_low", "ci_high", "p", "p_adjusted", "test", "n", "verdict")}
            for c in data["comparisons"]})
        run_id = run.id
    finally:
        run.finish()
    return run_id
