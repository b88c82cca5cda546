#!/usr/bin/env bash
# Download, for the GPU check machine (x86-64, CPython 3.12, no network), the wheels it lacks to run
# scripts/gpu_check.py: Keras and its two dependencies the machine does not have, pydantic (the
# params schema) and the data stages' imports (defusedxml: crop; ImageHash + PyWavelets: split).
# Everything else those imports need (jax with CUDA, numpy, pandas, pillow, scipy, scikit-image,
# scikit-learn, h5py, ml-dtypes, rich, absl-py, packaging, pyyaml, requests, tqdm, matplotlib) is
# on the machine (/work/.library/device/KINDS.md). Versions are requirements.lock's.
#
#   scripts/gpu_wheels.sh [DEST] [NAME==VERSION ...]     # DEST defaults to .whl (git-ignored)
#
# Extra NAME==VERSION arguments are fetched too (e.g. pandas==3.1.1 to match the lock). No
# dependencies are resolved (--no-deps): the list below is complete for the machine as described.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
shift || true
python=${PYTHON:-python3}

lock() {  # the version requirements.lock pins for a package (names compared normalised, PEP 503)
    local want
    want=$(echo "$1" | tr 'A-Z_.' 'a-z--')
    awk -F'==' -v w="$want" '{n=tolower($1); gsub(/[_.]/, "-", n); if (n == w) {print $2; exit}}' requirements.lock
}

wheels=()
for name in keras namex optree pydantic pydantic_core annotated-types typing-inspection typing_extensions \
    defusedxml ImageHash PyWavelets; do
    version=$(lock "$name")
    [ -n "$version" ] || { echo "error: $name is not in requirements.lock" >&2; exit 1; }
    wheels+=("$name==$version")
done
wheels+=("$@")

mkdir -p "$dest"
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" "${wheels[@]}"
ls -1 "$dest"/*.whl
du -ch "$dest"/*.whl | tail -1
