#!/usr/bin/env bash
# The GPU checks and figures in one run of under 10 minutes:
#
#   bash benchmarks/gpu_suite.sh OUT_DIR [WHEEL_DIR] [--only STEP,STEP] [--dry-run]
#
# WHEEL_DIR (made by benchmarks/gpu_wheels.sh) holds the wheels a bare GPU machine lacks, installed
# into a private folder when av or platformdirs do not import, and shared/ with the golden fixtures.
# Steps, in order of importance: tests (pytest -m cuda), train, model, profile, predict, compile,
# loader, long, people, people-long. Each has a time budget (`timeout`) within a total of $BUDGET
# seconds (default 550); a step that fails or times out is recorded and the next one runs; a step
# that no longer fits is marked skipped. --only reruns some steps (e.g. a second call for the ones
# the first skipped). Without CUDA, or with --dry-run, every bench runs tiny settings so that the
# plumbing is exercised.
# OUT_DIR gets summary.md (environment, a row per step, every table) and one log per area, 7 files
# in all.
set -uo pipefail

usage() { echo "usage: bash benchmarks/gpu_suite.sh OUT_DIR [WHEEL_DIR] [--only STEP,...] [--dry-run]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$1; shift
WHEELS=""; ONLY=""; DRY=0
if [ $# -gt 0 ] && [[ $1 != --* ]]; then WHEELS=$1; shift; fi
while [ $# -gt 0 ]; do
    case $1 in
        --only) [ $# -ge 2 ] || usage; ONLY=$2; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        *) usage ;;
    esac
done

START=$SECONDS
BUDGET=${BUDGET:-550}
PY=${PYTHON:-python3}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$REPO" || exit 1
export PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
INSTALL="not needed"
if [ -n "$WHEELS" ]; then
    WHEELS=$(cd "$WHEELS" && pwd)
    [ -d "$WHEELS/shared" ] && export DFER_SHARED="$WHEELS/shared"
    if ! "$PY" -c "import av, platformdirs" 2>/dev/null; then
        SITE=$(mktemp -d)
        trap 'rm -rf "$SITE"' EXIT
        if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl \
                > "$SITE/pip.log" 2>&1; then
            INSTALL="installed: $(cd "$WHEELS" && ls ./*.whl | xargs -n1 basename | tr '\n' ' ')"
        else
            INSTALL="FAILED (see tests.log)"
            cat "$SITE/pip.log" >> "$OUT/tests.log"
        fi
        export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
[ "$CUDA" = 1 ] && [ "$DRY" = 0 ] && FULL=1 || FULL=0
CORES=$(nproc)
WORKERS=$((CORES > 1 ? CORES - 1 : 1))
ENVIRONMENT=$("$PY" - <<'EOF' 2>&1
import platform, torch
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), GPU: {gpu}")
EOF
)
ROWS=()
PROBLEMS=0

summary() {
    {
        echo "# dfer GPU suite, $(date -u +%Y-%m-%dT%H:%MZ)"
        echo
        echo "- $ENVIRONMENT; $CORES cores"
        echo "- mode: $([ $FULL = 1 ] && echo full || echo 'dry run (tiny settings; CUDA steps skip)'); wheels: $INSTALL"
        echo "- shared fixtures: ${DFER_SHARED:-none (golden tests skip)}; elapsed $((SECONDS - START)) s of $BUDGET"
        echo
        echo "| step | status | seconds | log |"
        echo "|---|---|---|---|"
        printf '%s\n' "${ROWS[@]}"
        for log in tests train model profile predict loader; do
            [ -f "$OUT/$log.log" ] || continue
            echo
            echo "## $log.log"
            echo
            grep -E '^(\||#|\[|FAILED|ERROR|SKIPPED|=+ .* in [0-9.]+s|[0-9.]+ videos/s|mean seconds|[0-9]+ s: |[0-9]+-s two-person| +two people|TransNet V2 on CUDA)' "$OUT/$log.log"
        done
    } > "$OUT/summary.md.tmp" && mv "$OUT/summary.md.tmp" "$OUT/summary.md"
}

selected() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

# step NAME LOG SECONDS COMMAND...: runs COMMAND (an argument @BUDGET@ becomes the time it is given,
# less 30 s) with at most SECONDS, or what is left of the total, appending its output to OUT/LOG.
step() {
    local name=$1 log=$2 want=$3
    shift 3
    selected "$name" || return
    local left=$((BUDGET - (SECONDS - START)))
    local give=$((want < left ? want : left))
    if [ "$give" -lt 20 ]; then
        ROWS+=("| $name | skipped: out of time | 0 | |"); summary; return
    fi
    local args=("${@//@BUDGET@/$((give - 30))}")
    echo "### $name: ${args[*]}" >> "$OUT/$log.log"
    local t0=$SECONDS status
    timeout -k 10 "$give" "${args[@]}" >> "$OUT/$log.log" 2>&1
    local rc=$?
    case $rc in
        0) status=ok ;;
        124 | 137) status="timed out at $give s" ;;
        *) status="failed (exit $rc)" ;;
    esac
    [ $rc = 0 ] || PROBLEMS=$((PROBLEMS + 1))
    ROWS+=("| $name | $status | $((SECONDS - t0)) | $log.log |")
    echo "[$name] $status in $((SECONDS - t0)) s"
    summary
}

B=benchmarks
# ray_step SECONDS ARGS...: --ray local against plain predict (benchmarks/ray_bench.py), where the ray
# extra imports (its wheel, 79 MB, is not among those benchmarks/gpu_wheels.sh gathers).
ray_step() {
    local seconds=$1
    shift
    if "$PY" -c "import ray.data" 2>/dev/null; then
        step ray predict "$seconds" "$PY" $B/ray_bench.py "$@"
    elif selected ray; then
        ROWS+=("| ray | skipped: ray is not installed | 0 | |")
    fi
}

# Only the files that hold cuda tests: the others import what a GPU machine may lack (imageio-ffmpeg,
# kaldi-native-fbank), and one collection error would stop the whole run.
mapfile -t CUDA_TESTS < <(grep -l "pytest.mark.cuda" tests/test_*.py)
step tests tests 180 "$PY" -m pytest -m cuda -v -s -p no:cacheprovider "${CUDA_TESTS[@]}"
if [ $FULL = 1 ]; then
    step train train 150 "$PY" $B/train_bench.py --sizes 160 224 --batches 8 16 32 64 --precisions bf16 fp32 \
        --steps 10 --warmup 3
    step model model 60 "$PY" $B/model_bench.py --sizes 160 224 --batches 1 8 32 64 --precisions bf16 fp32 \
        --modes eager --steps 5
    step profile profile 60 "$PY" $B/profile_bench.py --size 160 --batch 32 --predict-files 16
    step predict predict 90 "$PY" $B/predict_bench.py --sections stages folder --folder-files 256 \
        --workers "$WORKERS" --batch-size 32
    step compile train 120 "$PY" $B/train_bench.py --sizes 160 --batches 32 --precisions bf16 \
        --modes eager compile --steps 10 --warmup 3
    step compile model 60 "$PY" $B/model_bench.py --sizes 160 --batches 32 --precisions bf16 --modes eager compile
    step loader loader 60 "$PY" $B/train_bench.py --batches --sizes 160 --loader-clips 200 \
        --loader-workers "$WORKERS"
    step long predict 150 "$PY" $B/predict_bench.py --sections long --long-seconds 600 3600 --window 2 \
        --workers "$WORKERS" --batch-size 32 --budget @BUDGET@
    step people predict 60 "$PY" $B/people_bench.py --sections short --device cuda
    # A 10-minute two-person video with the landmark model on the GPU: the front end in one process.
    step people-long predict 150 "$PY" $B/people_bench.py --arch tiny --size 112 --sections long \
        --long-seconds 600 --repeats 1 --device cuda
    ray_step 90 --files 64
else
    tiny=(--arch tiny --sizes 32)
    step train train 60 "$PY" $B/train_bench.py "${tiny[@]}" --batches 2 --precisions fp32 --steps 1 --warmup 1
    step model model 60 "$PY" $B/model_bench.py "${tiny[@]}" --batches 2 --precisions fp32 --modes eager --steps 1
    step profile profile 60 "$PY" $B/profile_bench.py --arch tiny --size 32 --batch 2 --predict-files 1
    step predict predict 90 "$PY" $B/predict_bench.py --arch tiny --size 32 --sections stages folder \
        --folder-files 4 --workers 2
    selected compile && ROWS+=("| compile | skipped: no GPU | 0 | |")
    step loader loader 90 "$PY" $B/train_bench.py --batches --sizes 32 --loader-clips 8 --loader-workers 2
    step long predict 90 "$PY" $B/predict_bench.py --arch tiny --size 32 --sections long --long-seconds 20 60 \
        --window 2 --budget @BUDGET@
    step people predict 60 "$PY" $B/people_bench.py --arch tiny --size 32 --sections short --repeats 1
    step people-long predict 60 "$PY" $B/people_bench.py --arch tiny --size 32 --sections long --long-seconds 20 \
        --repeats 1
    ray_step 90 --files 3 --arch tiny
fi
summary
echo "summary: $OUT/summary.md ($((SECONDS - START)) s)"
[ $PROBLEMS = 0 ]
