#!/usr/bin/env bash
# `make stop`: end what scripts/demo.sh (or scripts/services.sh) started, by the PIDs recorded
# in .work/pids/ only: the worker first (two SIGINTs; a flow run it is executing ends as
# Crashed, and the training slot it held frees itself about 5 minutes later), then the Prefect
# server. A server that was already running before is left alone.
set -euo pipefail
# shellcheck source=scripts/services.sh
source "$(dirname "$0")/services.sh"
services_down
