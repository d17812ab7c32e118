#!/bin/bash
# The one-call GPU check of issue 15 (benchmarks/gpu/README.md says how to call it through the
# device tool). Installs what the machine's image lacks from the carried .whl/ (offline), then
# runs benchmarks/gpu/suite.py: parts a-e, each under its own time limit, JSON and a summary in
# $OUT (default /tmp/jaxseg_gpu_out).
#
#   bash benchmarks/gpu/run.sh                 # on the GPU machine, whole call < 8 minutes
#   bash benchmarks/gpu/run.sh --dry-run       # tiny sizes on CPU, same code path (CI)
#   bash benchmarks/gpu/run.sh --parts b,d --limit b=300   # a rerun of some parts
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
export OUT=${OUT:-/tmp/jaxseg_gpu_out}
mkdir -p "${OUT}"
t0=$(date +%s)

# pyproject.toml's requirements this interpreter lacks (or has at a version out of range).
missing=$("${PYTHON}" benchmarks/gpu/missing_requirements.py) || exit 2
if [[ -n "${missing}" ]]; then
  echo "installing from .whl/ (offline): ${missing}"
  # shellcheck disable=SC2086  (one requirement per word)
  "${PYTHON}" -m pip install -q --no-index --find-links .whl --no-cache-dir ${missing} \
    || { echo "run.sh: offline install of '${missing}' from .whl/ failed; run" \
              "benchmarks/gpu/fetch_wheels.sh here and carry .whl" >&2; exit 2; }
fi
# jaxseg itself from this tree: no build isolation (nothing can be downloaded there), no deps.
if ! "${PYTHON}" -c "import jaxseg" 2>/dev/null; then
  "${PYTHON}" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
    || echo "run.sh: editable install failed; using PYTHONPATH"
fi
export PYTHONPATH="${PWD}${PYTHONPATH:+:${PYTHONPATH}}"
echo "set-up $(( $(date +%s) - t0 )) s"
exec "${PYTHON}" benchmarks/gpu/suite.py --out "${OUT}" "$@"
