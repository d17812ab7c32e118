#!/bin/bash
# Exports the ORIGINAL code (NVIDIA/semantic-segmentation, branch sdcnet) into the ignored
# .original/ of this checkout, for part c of benchmarks/gpu/run.sh (carried to the GPU machine).
#
#   benchmarks/gpu/export_original.sh /path/to/semantic-segmentation [REF]
#
# The path is a clone (or a bare mirror) of https://github.com/NVIDIA/semantic-segmentation;
# REF defaults to sdcnet. Only network/, loss.py, config.py, optimizer.py, utils/ and datasets/
# are exported (the networks import them; about 0.3 MB), never committed (see .gitignore).
set -euo pipefail
SRC=${1:?usage: benchmarks/gpu/export_original.sh CHECKOUT_OF_NVIDIA_semantic-segmentation [REF]}
REF=${2:-sdcnet}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST="${ROOT}/.original"
if ! git -C "${SRC}" rev-parse --verify --quiet "${REF}^{commit}" >/dev/null; then
  echo "export_original.sh: ${SRC} is not a git checkout with a '${REF}' branch or commit" >&2
  exit 2
fi
rm -rf "${DEST}"
mkdir -p "${DEST}"
git -C "${SRC}" archive "${REF}" config.py loss.py optimizer.py network utils datasets \
  | tar -x -C "${DEST}"
git -C "${SRC}" rev-parse "${REF}" > "${DEST}/COMMIT"
echo "exported ${SRC} ${REF} ($(cat "${DEST}/COMMIT")) to ${DEST}: $(du -sh "${DEST}" | cut -f1)"
