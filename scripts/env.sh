# Source me: the project's offline, quiet environment (DESIGN.md "Environment facts").
# Everything the project writes at run time stays under .work/ (git-ignored).
MTB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MTB_ROOT
export MTB_WORK="${MTB_WORK:-$MTB_ROOT/.work}"
export PREFECT_HOME="${PREFECT_HOME:-$MTB_WORK/prefect}"
export HF_HOME="${HF_HOME:-$MTB_WORK/hf}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
export TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=true
export MLFLOW_DISABLE_TELEMETRY=true
export TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1
mkdir -p "$PREFECT_HOME" "$HF_HOME"
