#!/usr/bin/env bash
# Create .venv and install the project with its pinned dependencies (idempotent).
# torch==2.13.0 must be in the same pip command as everything else: that takes the CPU
# wheel these machines keep on disk, where a wider range would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
STAMP=.venv/.installed
if [[ -f "$STAMP" && "$STAMP" -nt pyproject.toml ]]; then
  exit 0
fi
if [[ ! -x .venv/bin/python ]]; then
  echo "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
echo "installing multitask-bert and its dependencies (first time: a few minutes)"
.venv/bin/python -m pip install --quiet --progress-bar off "torch==2.13.0" -e ".[dev,bench]"
touch "$STAMP"
