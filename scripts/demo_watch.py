"""Follow one flow run until it ends: its state changes, its tasks' states and the training
progress (step of total, loss, ETA) from its logs. What `make demo` shows while it waits.

    python scripts/demo_watch.py FLOW_RUN_ID [--timeout SECONDS]

Exits 0 when the run ends Completed, 1 otherwise (or at the timeout).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from uuid import UUID

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
STEP = re.compile(r"step (\d+)/(\d+) epoch (\d+) loss ([0-9.naninf]+).*?ETA (\S+)")
SHOWN = ("per-head major metrics", "score (", "registered ", "skipped training",
         "trained ", "resuming", "early stopping", "error", "Error")


def progress_line(message: str) -> str | None:
    """A training log line as ``train: step 40/120 (33%)  loss 0.7312  ETA 1m05s``."""
    match = STEP.search(message)
    if not match:
        return None
    step, total, epoch, loss, eta = match.groups()
    percent = 100 * int(step) // max(int(total), 1)
    return f"  train: step {step}/{total} ({percent}%)  epoch {epoch}  loss {loss}  ETA {eta}"


def main(argv: list[str]) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.client.schemas.sorting import LogSort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flow_run_id", type=UUID)
    parser.add_argument("--timeout", type=float, default=None)
    args = parser.parse_args(argv)
    started = time.monotonic()
    seen_logs: set = set()
    states: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(args.flow_run_id)
            state = flow_run.state.type.value if flow_run.state else "PENDING"
            if states.get("flow") != state:
                shown = flow_run.state.name if flow_run.state else state
                print(f"flow run {flow_run.name!r}: {shown}", flush=True)
                states["flow"] = state
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[args.flow_run_id])))
            for task in sorted(tasks, key=lambda t: t.expected_start_time or 0):
                name = task.state.name if task.state else "Pending"
                if states.get(task.name) != name:
                    print(f"  {task.name}: {name}", flush=True)
                    states[task.name] = name
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[args.flow_run_id])),
                sort=LogSort.TIMESTAMP_ASC)
            for entry in logs:
                if entry.id in seen_logs:
                    continue
                seen_logs.add(entry.id)
                line = progress_line(entry.message)
                if line is None and any(key in entry.message for key in SHOWN):
                    line = "  " + entry.message.replace("\n", "\n    ")
                if line:
                    print(line, flush=True)
            if state in FINAL:
                return 0 if state == "COMPLETED" else 1
            if args.timeout is not None and time.monotonic() - started > args.timeout:
                print(f"still {state} after {args.timeout:.0f} s; it goes on (Prefect UI)")
                return 1
            time.sleep(3)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
