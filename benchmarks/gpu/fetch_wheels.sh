#!/bin/bash
# Downloads the wheels jaxseg needs that the GPU machine's image lacks (grain, ml-collections and
# their missing dependencies) for CPython 3.12 manylinux x86-64 into the ignored .whl/ of this
# checkout; benchmarks/gpu/run.sh installs them offline there (carry: [".whl", ".original"]).
#
#   benchmarks/gpu/fetch_wheels.sh            # versions: those of this environment, else latest
#
# The image already has jax, flax, optax, orbax-checkpoint, numpy, opencv, absl-py, tqdm,
# ml-dtypes, etils, protobuf, cloudpickle, psutil, PyYAML (/work/.library/device/KINDS.md), so
# only the closure below is fetched: well under the 64 MiB that a call may carry.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-python3}
DEST="${ROOT}/.whl"
# name, then its version range from pyproject.toml (the deps the image lacks have no range).
PACKAGES=("grain>=0.2.12,<0.3" "ml-collections>=1.0,<2" "array-record>=0.8.1" "portpicker"
          "tensorboardX>=2.6" "protobuf>=3.20" "flatbuffers>=24.3")

pin() {  # "name>=a,<b" -> "name==<installed version>" when this environment has a match
  "${PYTHON}" - "$1" <<'PY'
import sys
from importlib import metadata
from packaging.requirements import Requirement
req = Requirement(sys.argv[1])
try:
  version = metadata.version(req.name)
  print(f"{req.name}=={version}" if req.specifier.contains(version) else sys.argv[1])
except metadata.PackageNotFoundError:
  print(sys.argv[1])
PY
}

mkdir -p "${DEST}"
specs=()
for p in "${PACKAGES[@]}"; do specs+=("$(pin "$p")"); done
echo "fetching ${specs[*]}"
"${PYTHON}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "${DEST}" "${specs[@]}"
ls -l "${DEST}"
size=$(du -sb "${DEST}" | cut -f1)
echo ".whl: $((size / 1024)) KiB"
if (( size > 48 * 1024 * 1024 )); then
  echo "fetch_wheels.sh: .whl is over 48 MiB; the call may carry 64 MiB in all" >&2
  exit 1
fi
