"""`python -m analysis results/NAME`: write the study's report (the same as `harness report NAME`).

`python -m analysis summary [RESULTS_DIR]`: write RESULTS_DIR/summary.md, .csv and .tex, every experiment's primary
comparisons from the report.json files in it (default: $HARNESS_RESULTS, else ./results).
"""

from __future__ import annotations

import argparse
import os
import sys

from analysis.report import build_report
from analysis.summary import SUMMARY, write_summary
from harness.errors import HarnessError


def summary_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m analysis {SUMMARY}",
                                     description="every experiment's primary comparisons in one table")
    parser.add_argument("results_dir", nargs="?", default=os.environ.get("HARNESS_RESULTS") or "results",
                        help="the folder whose */report.json to read (default: $HARNESS_RESULTS, else ./results)")
    args = parser.parse_args(argv)
    try:
        files = write_summary(args.results_dir)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {files.markdown}, {files.csv} and {files.latex}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [SUMMARY]:
        return summary_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_dir", help="a study directory, e.g. results/rank_ablation")
    parser.add_argument("--baseline", default="base", help="arm (or arm label) every other arm is compared with")
    parser.add_argument("--metric", default=None, help="headline per-item metric (default: the spec's eval.metric)")
    parser.add_argument("--price-per-device-hour", type=float, default=None, help="for cost per 1K calls, in $")
    parser.add_argument("--level", choices=["item", "seed"], default="item", help="unit of the significance test")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="equivalence margin as a share of each metric's range (default: the spec's "
                             "report.tolerance, else 0.02)")
    args = parser.parse_args(argv)
    try:
        paths = build_report(args.study_dir, baseline=args.baseline, metric=args.metric,
                             price_per_device_hour=args.price_per_device_hour, level=args.level,
                             tolerance=args.tolerance)
    except HarnessError as e:  # an AnalysisError, or a bad --tolerance
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {paths}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
