#!/usr/bin/env bash
# The core install (API.md section 10): in a fresh venv, `pip install .` with no extra, then
# `causalflow demo` runs, `import causalflow` works with cf.oci reachable, an OCI learner
# names the extra to install, and the packages of the extras are not installed at all.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check --no-input "$repo"
cd "$work"  # away from the source tree: the installed package is what runs
"$work/venv/bin/causalflow" demo --n 20000 >"$work/demo.txt"
grep -q "Average effects" "$work/demo.txt"
"$py" - <<'PY'
import importlib.util

import causalflow as cf

optional = ["sklearn", "lightgbm", "matplotlib", "nbformat", "nbclient", "ipykernel", "pyarrow", "pymc",
            "duckdb", "ibis", "pyspark", "mcp", "stochtree"]
installed = [m for m in optional if importlib.util.find_spec(m) is not None]
assert not installed, f"the core install pulled in optional packages: {installed}"
assert cf.oci.Plan.__name__ == "Plan"
try:
    cf.oci.get_learner("linear").classifier(0)
except ImportError as exc:
    assert 'pip install "causalflow[oci]"' in str(exc), exc
else:
    raise AssertionError("an OCI learner ran without the oci extra")
print(f"core install OK: causalflow {cf.__version__}, demo ran, none of {len(optional)} optional packages installed")
PY
