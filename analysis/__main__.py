"""`python -m analysis results/NAME`: write the study's report (the same as `harness report NAME`)."""

from __future__ import annotations

import argparse
import sys

from analysis.errors import AnalysisError
from analysis.report import build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    parser.add_argument("study_dir", help="a study directory, e.g. results/rank_ablation")
    parser.add_argument("--baseline", default="base", help="arm (or arm label) every other arm is compared with")
    parser.add_argument("--metric", default=None, help="headline per-item metric (default: the spec's eval.metric)")
    parser.add_argument("--price-per-device-hour", type=float, default=None, help="for cost per 1K calls, in $")
    parser.add_argument("--level", choices=["item", "seed"], default="item", help="unit of the significance test")
    args = parser.parse_args(argv)
    try:
        paths = build_report(args.study_dir, baseline=args.baseline, metric=args.metric,
                             price_per_device_hour=args.price_per_device_hour, level=args.level)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {paths}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
