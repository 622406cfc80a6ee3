"""The ``causalflow`` command line: ``demo``, ``analyze``, ``plan``, ``oci ...``, ``mcp``.

Each sub-command lives with its feature; this module only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> "module:function"; the function takes the remaining argv and returns an exit code
_COMMANDS = {
    "demo": ("causalflow.demo:main", "simulate an online-store experiment and print its effects"),
    "oci": ("causalflow.oci.cli:main", "observational causal inference agent (run, show, eval-acic)"),
    "analyze": ("causalflow.tools.cli:analyze_main", "effects table of an experiment: a data file and a spec"),
    "plan": ("causalflow.tools.cli:plan_main", "power, sample size or minimum detectable effect"),
    "mcp": ("causalflow.tools.cli:mcp_main", "serve the agent tools over MCP: causalflow mcp --root DIR"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="causalflow", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(_COMMANDS),
                        help="; ".join(f"{k}: {v[1]}" for k, v in sorted(_COMMANDS.items())))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    module, function = _COMMANDS[args.command][0].split(":")
    try:
        return int(getattr(importlib.import_module(module), function)(argv[1:]) or 0)
    except SystemExit as exc:  # a sub-command's argparse: 0 after --help, 2 for a usage error
        return exc.code if isinstance(exc.code, int) else 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
