#!/usr/bin/env bash
# The GPU check of issue 16: the train stage's code on a GPU, float32 and mixed precision, the
# default model and a 224x224 one, with images/s and test metrics (scripts/gpu_check.py does the
# work, one part per process, each under a time cap inside one overall budget).
#
# Here, once (fills the git-ignored .whl/ and .gpu/ that the device call carries, ~19 MiB):
#   bash scripts/gpu_check.sh prepare
# On the bare GPU machine (jax with CUDA there; keras, pydantic, MLflow, DVC and data not), from the
# repo root, results under $OUT (at most 8 files come back: 6 part JSONs, gpu_check.json, the log):
#   bash scripts/gpu_check.sh
# It installs the carried wheels, rebuilds data/ from the carried BCCD mirror with the data stages'
# code, and runs the parts. Knobs (environment): GPU_CHECK_BUDGET (seconds for everything, 450),
# GPU_CHECK_SMALL / GPU_CHECK_BIG (extra `train` flags for the default / the large model),
# GPU_CHECK_REQUIRE ('--require-gpu', or '' for a CPU rehearsal), GPU_CHECK_PARTS (the training
# parts to run, e.g. "big_float32" to rerun one on a warm machine; env and data always run, and data
# is reused when there), KERAS_BACKEND (jax).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = prepare ]; then
    set -e
    src=${WBC_MIRRORS:-../shared/datasets}/bccd
    mkdir -p .gpu/bccd
    cp "$src"/BCCD_Dataset-*.zip "$src"/labels.csv .gpu/bccd/
    rm -rf .whl && scripts/gpu_wheels.sh .whl
    for p in /.whl/ /.gpu/; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >>.git/info/exclude; done
    tree=$({ git ls-files -z; git ls-files -z --others --exclude-standard; } | du -cb --files0-from=- | tail -1 | cut -f1)
    carried=$(du -sb .whl .gpu | awk '{s += $1} END {print s}')
    echo "travels: tree $((tree / 1048576)) MiB + carried .whl .gpu $((carried / 1048576)) MiB (limit 64 MiB)"
    exit 0
fi

out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
exec > >(tee -a "$out/gpu_check.log") 2>&1
budget=${GPU_CHECK_BUDGET:-450}
py=${PYTHON:-python3}
echo "gpu_check: start $(date -u +%FT%TZ), budget ${budget}s, $(nproc) CPUs, $($py --version 2>&1)"

if compgen -G ".whl/*.whl" >/dev/null; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu_check: wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    echo "gpu_check: installed $(ls .whl/*.whl | wc -l) wheels in ${SECONDS}s"
fi
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export WBC_MIRRORS=${WBC_MIRRORS:-.gpu} JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jax-cache}
require=${GPU_CHECK_REQUIRE---require-gpu}
small=${GPU_CHECK_SMALL:-}
big=${GPU_CHECK_BIG:---model mobilenetv2 --size 224 --epochs 3 --no-eval}  # throughput only

parts=" ${GPU_CHECK_PARTS:-small_float32 small_mixed big_float32 big_mixed} env data report "

part() {  # NAME CAP ARGS...: one part, capped by CAP and by what is left of the budget
    local name=$1 cap=$2 left rc start=$SECONDS
    shift 2
    [[ $parts == *" $name "* ]] || return 0
    left=$((budget - SECONDS))
    if ((left < 30)); then
        echo "== $name: skipped, ${left}s of the budget left"
        return 124
    fi
    ((cap > left)) && cap=$left
    echo "== $name: cap ${cap}s, $(date -u +%T)"
    timeout -k 5 "$cap" $py scripts/gpu_check.py "$@" --out "$out"
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - start))s"
    return $rc
}

# shellcheck disable=SC2086  # the knobs are lists of flags
part env 60 env $require
case $? in
    0) ;;
    3) echo "gpu_check: the backend sees no GPU, stopping"; exit 3 ;;
    *) echo "gpu_check: the imports fail, stopping"; exit 1 ;;
esac
part data 150 data || { echo "gpu_check: no data, stopping"; exit 1; }
# shellcheck disable=SC2086
part small_float32 130 train --name small_float32 $require $small
# shellcheck disable=SC2086
part small_mixed 110 train --name small_mixed --precision mixed $require $small
# shellcheck disable=SC2086
part big_float32 90 train --name big_float32 $require $big
# shellcheck disable=SC2086
part big_mixed 80 train --name big_mixed --precision mixed $require $big
budget=$((budget + 20))  # the report always runs
part report 20 report
grep -h "^result:" "$out/gpu_check.log"
echo "gpu_check: done in ${SECONDS}s"
sleep 1  # tee writes the last lines
