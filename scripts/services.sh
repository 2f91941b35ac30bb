#!/usr/bin/env bash
# The embedded services of one machine (DESIGN.md "Real components and how they start"):
# a Prefect server on 127.0.0.1:4200 (SQLite under $PREFECT_HOME) and one process worker for
# the work pool `local`, plus the work pools and the deployments of prefect.yaml.
#
#   scripts/services.sh [up]     start what is not running yet (reusing a server that already
#                                answers on the port), create the pools, `prefect deploy --all`
#   scripts/services.sh status   what runs, what was started here
#   scripts/services.sh down     the same as scripts/stop.sh
#
# Sourced by scripts/demo.sh and scripts/stop.sh for the same functions. What this starts is
# recorded in .work/pids/ (stopped only by those PIDs) and logs to .work/logs/.
# MTB_PREFECT_PORT picks another port; PREFECT_API_URL is set for this shell only (not in
# env.sh: `python flows/train_multitask.py` and the tests use their own Prefect API).

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

MTB_PREFECT_HOST=127.0.0.1
MTB_PREFECT_PORT="${MTB_PREFECT_PORT:-4200}"
MTB_UI_URL="http://$MTB_PREFECT_HOST:$MTB_PREFECT_PORT"
MTB_PIDS="$MTB_WORK/pids"
MTB_LOGS="$MTB_WORK/logs"
MTB_POOL=local
MTB_GPU_POOL=gpu
export PREFECT_API_URL="$MTB_UI_URL/api"
# one MLflow store for the flow's runs and for `multitask-bert train` (its default for runs/...)
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$MTB_ROOT/runs/mlflow.db}"
# the flow's return value (metrics, registered version) stays readable after the run
export PREFECT_RESULTS_PERSIST_BY_DEFAULT="${PREFECT_RESULTS_PERSIST_BY_DEFAULT:-true}"
export PREFECT_WORKER_QUERY_SECONDS="${PREFECT_WORKER_QUERY_SECONDS:-5}"
# Concurrency leases (the flow's one-training-at-a-time limit, the nightly deployment's limit)
# on disk under $PREFECT_HOME: kept in memory, the default, a server restart forgets the lease
# of a run that was killed and its slot stays taken forever; on disk it expires (300 s).
export PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="${PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE:-prefect.server.concurrency.lease_storage.filesystem}"

# Every API call of the worker and of flow runs rides out a server outage (a restart, an
# upgrade): 7 retries back off 2, 4, ..., 128 s, so a call waits for a server that is back
# within about two minutes (Prefect's default, 5, gives up after about one).
export PREFECT_CLIENT_MAX_RETRIES="${PREFECT_CLIENT_MAX_RETRIES:-7}"
# reruns of a Crashed train-multitask run by the crash automation (deployments/crash_automation.py)
export MTB_MAX_CRASH_RERUNS="${MTB_MAX_CRASH_RERUNS:-2}"

SERVER_PID_FILE="$MTB_PIDS/server.pid"
WORKER_PID_FILE="$MTB_PIDS/worker-$MTB_POOL.pid"

_python() { "$MTB_ROOT/.venv/bin/python" "$@"; }
_prefect() { "$MTB_ROOT/.venv/bin/prefect" "$@"; }
say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The live PID recorded in $1 whose command line still matches $2, else nothing (and the
# stale file goes: a reused PID is never signalled).
recorded_pid() {
  local file=$1 pattern=$2 pid
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
      && ps -p "$pid" -o command= 2>/dev/null | grep -q -- "$pattern"; then
    echo "$pid"
    return 0
  fi
  rm -f "$file"
  return 1
}

# Start "$@" in its own session (Ctrl-C in this terminal does not reach it), with SIGINT at
# its default (a background job of a non-interactive shell would inherit it ignored, and
# Python would then never see the SIGINTs that stop it), output to $1, PID into $2.
spawn_detached() {
  local log=$1 pid_file=$2
  shift 2
  mkdir -p "$MTB_PIDS" "$MTB_LOGS"
  # the venv's python itself (not a shell function) so that $! is the PID that execs
  "$MTB_ROOT/.venv/bin/python" -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setsid()
os.execvp(sys.argv[1], sys.argv[1:])' "$@" >>"$log" 2>&1 </dev/null &
  echo $! >"$pid_file"
}

api_healthy() {
  _python - "$PREFECT_API_URL/health" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
    sys.exit(0 if response.status == 200 else 1)
EOF
}

port_in_use() {
  _python - "$MTB_PREFECT_HOST" "$MTB_PREFECT_PORT" <<'EOF'
import socket, sys
with socket.socket() as s:
    s.settimeout(1)
    sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)
EOF
}

start_server() {
  local pid
  if pid=$(recorded_pid "$SERVER_PID_FILE" "prefect server start"); then
    say "Prefect server already running (PID $pid) at $MTB_UI_URL"
  elif api_healthy; then
    say "reusing the Prefect server that answers at $MTB_UI_URL (not started here: make stop leaves it)"
    return 0
  elif port_in_use; then
    die "port $MTB_PREFECT_PORT is taken by something that is not a Prefect server; free it or set MTB_PREFECT_PORT"
  else
    say "starting the Prefect server at $MTB_UI_URL (SQLite in $PREFECT_HOME, log $MTB_LOGS/server.log)"
    spawn_detached "$MTB_LOGS/server.log" "$SERVER_PID_FILE" \
      "$MTB_ROOT/.venv/bin/prefect" server start --host "$MTB_PREFECT_HOST" --port "$MTB_PREFECT_PORT"
    pid=$(<"$SERVER_PID_FILE")
  fi
  local waited=0
  until api_healthy; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$MTB_LOGS/server.log" >&2 || true
      rm -f "$SERVER_PID_FILE"
      die "the Prefect server exited during start-up (log above: $MTB_LOGS/server.log)"
    fi
    (( waited++ < 120 )) || die "the Prefect server did not answer in 60 s ($MTB_LOGS/server.log)"
    sleep 0.5
  done
}

ensure_pools() {
  if ! _prefect work-pool inspect "$MTB_POOL" >/dev/null 2>&1; then
    say "creating the process work pool '$MTB_POOL'"
    _prefect work-pool create "$MTB_POOL" --type process >/dev/null
  fi
  # `prefect deploy --all` refuses a deployment whose pool is missing. No Docker is needed
  # to create or deploy to it, only to run its flows (deployments/README.md).
  if ! _prefect work-pool inspect "$MTB_GPU_POOL" >/dev/null 2>&1; then
    say "creating the Docker work pool '$MTB_GPU_POOL' (GPU job variables; deployments/README.md)"
    _prefect work-pool create "$MTB_GPU_POOL" --type docker \
      --base-job-template "$MTB_ROOT/deployments/gpu-docker-pool.json" >/dev/null
  fi
}

start_worker() {
  local pid
  if pid=$(recorded_pid "$WORKER_PID_FILE" "prefect worker start"); then
    say "worker for pool '$MTB_POOL' already running (PID $pid)"
    return 0
  fi
  say "starting a worker for pool '$MTB_POOL' (log $MTB_LOGS/worker-$MTB_POOL.log)"
  spawn_detached "$MTB_LOGS/worker-$MTB_POOL.log" "$WORKER_PID_FILE" \
    "$MTB_ROOT/.venv/bin/prefect" worker start --pool "$MTB_POOL" --type process \
    --name "multitask-bert-$MTB_POOL-$(hostname -s 2>/dev/null || echo host)"
  sleep 1
  recorded_pid "$WORKER_PID_FILE" "prefect worker start" >/dev/null || {
    tail -n 30 "$MTB_LOGS/worker-$MTB_POOL.log" >&2 || true
    die "the worker exited during start-up ($MTB_LOGS/worker-$MTB_POOL.log)"
  }
}

deploy_all() {
  say "deploying prefect.yaml (train-multitask/local, /scheduled, /gpu; score-multitask/local; sweep-multitask/local)"
  (cd "$MTB_ROOT" && _prefect --no-prompt deploy --all) >"$MTB_LOGS/deploy.log" 2>&1 || {
    tail -n 40 "$MTB_LOGS/deploy.log" >&2
    die "prefect deploy --all failed ($MTB_LOGS/deploy.log)"
  }
}

# One automation per train-multitask deployment: a Crashed run is rerun with its parameters
# (it resumes from the experiment's checkpoint), at most $MTB_MAX_CRASH_RERUNS times in a row.
# Created or updated in place: running this again changes nothing.
ensure_crash_automations() {
  say "automation: rerun Crashed train-multitask runs, at most $MTB_MAX_CRASH_RERUNS times (deployments/crash_automation.py)"
  (cd "$MTB_ROOT" && _python deployments/crash_automation.py --max-reruns "$MTB_MAX_CRASH_RERUNS") \
    >"$MTB_LOGS/automations.log" 2>&1 || {
    tail -n 40 "$MTB_LOGS/automations.log" >&2
    die "creating the crash automations failed ($MTB_LOGS/automations.log)"
  }
}

services_up() {
  mkdir -p "$MTB_PIDS" "$MTB_LOGS"
  start_server
  ensure_pools
  start_worker
  deploy_all
  ensure_crash_automations
}

# Stop the process recorded in $1 (command pattern $3): $4 times signal $2, a second apart
# (the worker needs two SIGINTs), then wait up to 30 s; SIGTERM if it outlives that.
# Returns 1 when nothing recorded was running, 2 when it would not stop.
stop_recorded() {
  local file=$1 signal=$2 pattern=$3 times=$4 label=$5 pid i
  pid=$(recorded_pid "$file" "$pattern") || return 1
  for ((i = 0; i < times; i++)); do
    kill -s "$signal" "$pid" 2>/dev/null || true
    for _ in 1 2 3 4 5; do kill -0 "$pid" 2>/dev/null || break 2; sleep 0.2; done
  done
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "  $label (PID $pid) still running after SIG$signal: sending SIGTERM"
    kill -s TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  if kill -0 "$pid" 2>/dev/null; then
    echo "  $label (PID $pid) is still running; $file kept" >&2
    return 2
  fi
  rm -f "$file"
  echo "stopped $label (PID $pid)"
}

services_down() {
  local stopped=0 rc
  # the worker first (two SIGINTs; a flow run it is executing ends as Crashed), then the server
  stop_recorded "$WORKER_PID_FILE" INT "prefect worker start" 2 "worker for pool '$MTB_POOL'" \
    && stopped=1 || { rc=$?; (( rc == 2 )) && return 1; }
  stop_recorded "$SERVER_PID_FILE" INT "prefect server start" 1 "Prefect server at $MTB_UI_URL" \
    && stopped=1 || { rc=$?; (( rc == 2 )) && return 1; }
  (( stopped )) || echo "nothing to stop: no server or worker recorded in $MTB_PIDS"
  return 0
}

services_status() {
  local pid
  if pid=$(recorded_pid "$SERVER_PID_FILE" "prefect server start"); then
    echo "server: PID $pid at $MTB_UI_URL (started here)"
  elif api_healthy; then
    echo "server: $MTB_UI_URL answers (not started here)"
  else
    echo "server: not running"
  fi
  if pid=$(recorded_pid "$WORKER_PID_FILE" "prefect worker start"); then
    echo "worker: PID $pid, pool '$MTB_POOL'"
  else
    echo "worker: not running"
  fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  case "${1:-up}" in
    up) services_up; say "Prefect UI: $MTB_UI_URL  (stop with: make stop)" ;;
    status) services_status ;;
    down) services_down ;;
    *) die "usage: scripts/services.sh [up|status|down]" ;;
  esac
fi
