#!/usr/bin/env bash
# The README's main command (`make demo`): the whole pipeline on this machine, the way users run
# it. Installs (once), starts or reuses the Prefect server on 127.0.0.1:4200 and a process
# worker, deploys prefect.yaml, runs `train-multitask/local` (the packaged MiniLM on the sample
# tasks, configs/quickstart.yaml: a few minutes on 2 CPU cores), then prints per-head metrics,
# the registered model version and where to look. Server and worker keep running for the UI;
# `make stop` ends them.
#
#   scripts/demo.sh [KEY=VALUE ...] [--config PATH] [--force] [--model-name NAME] [-- ARGS...]
#
#   KEY=VALUE          config overrides, e.g. training.epochs=1
#   --config PATH      experiment YAML (default configs/quickstart.yaml)
#   --force            train even when data and config equal the champion's (the flow skips
#                      training otherwise: a second `make demo` is quick)
#   -- ARGS            passed on to `prefect deployment run`, e.g. -- --tag manual
#   make demo ARGS="training.epochs=1 --force"
set -euo pipefail
cd "$(dirname "$0")/.."

config=configs/quickstart.yaml
force=false
model_name=multitask-bert
overrides=()
run_args=()
while (($#)); do
  case "$1" in
    --config) config=$2; shift 2 ;;
    --config=*) config=${1#*=}; shift ;;
    --force) force=true; shift ;;
    --model-name) model_name=$2; shift 2 ;;
    --model-name=*) model_name=${1#*=}; shift ;;
    --) shift; run_args=("$@"); break ;;
    -h|--help) sed -n '2,16p' "$0" | cut -c3-; exit 0 ;;
    *=*) overrides+=("$1"); shift ;;
    *) echo "error: unknown argument '$1' (scripts/demo.sh --help)" >&2; exit 2 ;;
  esac
done

scripts/setup.sh
# shellcheck source=scripts/services.sh
source scripts/services.sh

started=$(date +%s)
services_up

# the deployment's `params` form, filled from the arguments
params=$(_python - "$config" "$force" "$model_name" "${overrides[@]}" <<'EOF'
import json, sys
config, force, model_name, *overrides = sys.argv[1:]
print(json.dumps({"params": {"config_path": config, "overrides": overrides,
                             "force": force == "true", "model_name": model_name}}))
EOF
)
say "running train-multitask/local: $params"
run_log="$MTB_LOGS/demo-run.log"
set +e
_prefect deployment run train-multitask/local --params "$params" "${run_args[@]}" 2>&1 \
  | tee "$run_log"
set -e
flow_run_id=$(grep -oE 'UUID: [0-9a-f-]{36}' "$run_log" | head -n 1 | cut -d' ' -f2 || true)
[[ -n $flow_run_id ]] || die "no flow run was created (output above, $run_log)"
# while it runs: state changes, task states and the training progress (step, loss, ETA)
set +e
_python scripts/demo_watch.py "$flow_run_id" 2>&1 | tee -a "$run_log"
run_status=${PIPESTATUS[0]}
set -e

summary_status=0
_python scripts/demo_summary.py "$flow_run_id" || summary_status=$?
echo "  logs         $MTB_LOGS/ (server.log, worker-$MTB_POOL.log, deploy.log, demo-run.log)"
echo "  stop         make stop   (server and worker keep running until then)"
echo "demo took $(( $(date +%s) - started )) s"
if (( run_status != 0 || summary_status != 0 )); then
  tail -n 25 "$MTB_LOGS/worker-$MTB_POOL.log" >&2 || true
  die "flow run $flow_run_id did not end Completed (worker log above: $MTB_LOGS/worker-$MTB_POOL.log)"
fi
