"""The `wbc` command: tools around the DVC pipeline (the stages themselves run under `dvc repro`)."""

import argparse
import json
import sys
from pathlib import Path

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.gates import baseline_from_dvc, check_gates, format_table
from pipeline.params import load_params


def gate(args: argparse.Namespace) -> int:
    """Check the current evaluation against the gates; 0 when every gate passes."""
    gates = load_params(Path(args.params)).gates
    try:
        current = json.loads(Path(args.metrics).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PipelineError(f"{args.metrics}: cannot read the evaluation metrics ({err})") from None
    baseline = None if args.no_baseline else baseline_from_dvc(args.baseline, args.metrics)
    checks = check_gates(current, baseline, gates)
    print(format_table(checks))
    if baseline is None and not args.no_baseline:
        print(f"(no baseline metrics at {args.baseline}: drop gates skipped)")
    failed = [c for c in checks if not c.passed]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wbc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gate", help="check metrics/evaluate.json against params.yaml's gates")
    g.add_argument("--baseline", default="HEAD", help="git revision of the baseline metrics (default HEAD)")
    g.add_argument("--no-baseline", action="store_true", help="check the floors only")
    g.add_argument("--metrics", default=str(paths.stage_metrics("evaluate")))
    g.add_argument("--params", default=str(paths.PARAMS))
    g.set_defaults(run=gate)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
