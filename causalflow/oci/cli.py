"""``causalflow oci ...``: run the OCI loop on a plan file, or show a finished run.

    causalflow oci run PLAN --out DIR [--max-iterations 3] [--artifact-level full] [--no-notebook]
    causalflow oci show DIR
    causalflow oci eval SUITE --out DIR     (SUITE: acic, nie_wager, real, all; see oci/suite.py)

Sub-commands are a dispatch table (name -> (function, help)) so features can add
their own (for example ``eval-acic``).
"""

from __future__ import annotations

import argparse
import sys

from .._optional import MissingDependency
from ..errors import ValidationError

__all__ = ["main"]


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="causalflow oci run", description="run the OCI loop on a plan")
    parser.add_argument("plan", help="plan file (YAML or JSON)")
    parser.add_argument("--out", required=True, help="folder for the artifacts and run.json")
    parser.add_argument("--max-iterations", type=int, default=3)
    parser.add_argument("--artifact-level", choices=["minimal", "standard", "full"], default="full")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-notebook", action="store_true",
                        help="skip the executed notebook of level full (batch evaluation)")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    from .loop import run

    bar = tqdm(total=args.max_iterations, desc="OCI iterations", unit="it", disable=args.no_progress,
               file=sys.stderr)

    def progress(iteration) -> None:
        bar.update(1)
        bar.set_postfix_str(", ".join(f"{k}: {v}" for k, v in iteration.verdicts.items()))

    try:
        result = run(args.plan, max_iterations=args.max_iterations, artifacts=args.out,
                     artifact_level=args.artifact_level, progress=progress, notebook=not args.no_notebook)
    finally:
        bar.close()
    from .summary import summary_text

    print(f"stopped: {result.stop_reason} after {len(result.iterations)} iteration(s)")
    print(summary_text(result))
    print(f"artifacts: {args.out}/run.json, report: {args.out}/report.md")
    return 0


def _show(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="causalflow oci show", description="summarise a finished run")
    parser.add_argument("dir", help="run folder (with run.json)")
    args = parser.parse_args(argv)
    import pandas as pd

    from .artifacts import read_run

    index = read_run(args.dir)
    plan = index["plan"]
    print(f"plan: treatment {plan['treatment']!r}, outcome {plan['outcome']!r}, "
          f"estimands {plan['estimands']}")
    print(f"stopped: {index['stop_reason']} after {len(index['iterations'])} iteration(s)")
    for it in index["iterations"]:
        verdicts = ", ".join(f"{k}: {v}" for k, v in it["verdicts"].items())
        print(f"  iteration {it['index']} ({it['actor']}): {verdicts}; {it['n_proposals']} proposal(s)")
    reason = index["final"].get("reason")
    print(f"reported: iteration {index['final']['iteration']}" + (f" ({reason})" if reason else "") + ":")
    from .formatting import fmt_number

    table = pd.DataFrame(index["final"]["table"])
    print(table.apply(lambda col: col.map(fmt_number)).to_string(index=False))
    return 0


def _eval_acic(argv: list[str]) -> int:
    from .acic import cli_main

    return cli_main(argv)


def _eval(argv: list[str]) -> int:
    from .suite import cli_main

    return cli_main(argv)


#: sub-command -> (function(argv) -> exit code, help)
COMMANDS = {
    "run": (_run, "run the loop on a plan file: causalflow oci run PLAN --out DIR"),
    "show": (_show, "summarise a run folder: causalflow oci show DIR"),
    "eval": (_eval, "score the loop and three baselines on a validation suite: causalflow oci eval SUITE "
                     "--out DIR (SUITE: acic, nie_wager, real, all)"),
    "eval-acic": (_eval_acic, "score the loop on ACIC 2016: causalflow oci eval-acic --data DIR --out DIR"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``causalflow oci``; returns the exit code (2 for usage or input errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: causalflow oci {" + ",".join(COMMANDS) + "} ...", file=sys.stderr)
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:10s} {text}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    function = COMMANDS[argv[0]][0]
    try:
        return int(function(argv[1:]) or 0)
    except (ValidationError, MissingDependency) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
