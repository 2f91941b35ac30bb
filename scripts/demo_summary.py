"""Print what one ``train-multitask`` flow run produced and where to look at it.

    python scripts/demo_summary.py FLOW_RUN_ID

Reads the flow run from the Prefect API (``PREFECT_API_URL``): its state and its return value
(persisted: scripts/services.sh starts the worker with PREFECT_RESULTS_PERSIST_BY_DEFAULT),
else its ``run-summary`` artifact; then the model's champion from the MLflow registry. Exits
1 when the run did not end Completed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parents[1]


def shown(path: str | Path) -> str:
    """A path relative to the checkout when it is inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def read_run(flow_run_id: UUID) -> tuple[Any, Any, str | None]:
    """The flow run, its return value (None when not persisted) and its summary artifact."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    summary = next((a.data for a in artifacts if a.key == "run-summary"), None)
    result = None
    if flow_run.state is not None and flow_run.state.is_completed():
        try:
            result = flow_run.state.result(raise_on_failure=False)
        except Exception as exc:
            print(f"(the flow's return value is not readable here: {exc})")
    return flow_run, result if isinstance(result, dict) else None, summary


def print_metrics(metrics: dict[str, Any]) -> None:
    from multitask_bert.evaluation.report import format_metrics_table

    for split, values in metrics.items():
        print(format_metrics_table(values, title=f"\nper-head metrics ({split})"))


def print_registry(result: dict[str, Any], tracking_uri: str) -> str | None:
    """Registration of this run and the champion now; returns the run folder to point at."""
    from multitask_bert.registry import find_champion

    registration = result.get("registration") or {}
    model_name = registration.get("model_name") or (result.get("champion") or {}).get(
        "model_name", "multitask-bert")
    if registration:
        print(f"\nregistered: {model_name} version {registration['version']} "
              f"(aliases: {', '.join(registration['aliases']) or 'none'})")
        print(f"  score {_number(registration['score'])} ({registration.get('score_metric')}): "
              f"{registration['reason']}")
    try:
        champion = find_champion(tracking_uri, model_name)
    except Exception as exc:
        print(f"champion: not readable from {tracking_uri} ({exc})")
        return result.get("run_dir")
    if champion:
        print(f"champion now: {model_name} version {champion['version']} "
              f"(score {_number(champion.get('score'))}, {champion['model_uri']})")
    else:
        print(f"champion now: none registered for {model_name}")
    return result.get("run_dir") or ((champion or {}).get("tags") or {}).get("run_dir")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    flow_run_id = UUID(argv[0])
    ui_url = os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api").removesuffix("/api")
    try:
        flow_run, result, summary = read_run(flow_run_id)
    except Exception as exc:  # the server went away, a wrong PREFECT_API_URL, ...
        print(f"\nflow run {flow_run_id}: not readable from {ui_url}/api ({exc!r})")
        return 1
    state = flow_run.state
    print(f"\nflow run {flow_run.name!r}: {state.name if state else 'unknown'}")
    if state is not None and not state.is_completed() and state.message:
        print(state.message)
    run_dir = None
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if result is not None:
        if result.get("skipped"):
            print(result["reason"])
            print("(scripts/demo.sh --force, or make demo ARGS=--force, trains anyway)")
        else:
            print(f"run folder: {shown(result['run_dir'])}   score: {result['score']:.4f}")
            print_metrics(result["metrics"])
        if "*" not in result.get("tracking_uri", "*"):  # redacted URIs are no use
            tracking_uri = result["tracking_uri"]
        run_dir = print_registry(result, tracking_uri)
    elif summary:
        print(summary)

    print("\nwhere to look:")
    print(f"  Prefect UI   {ui_url}/runs/flow-run/{flow_run_id}")
    if tracking_uri:
        print(f"  MLflow UI    mlflow ui --backend-store-uri {tracking_uri} "
              "--port 5000 --host 127.0.0.1   (then http://127.0.0.1:5000)")
    if run_dir and (Path(run_dir) / "tensorboard").is_dir():
        experiment_dir = Path(run_dir).parent  # every run of the experiment, side by side
        print(f"  TensorBoard  tensorboard --logdir {shown(experiment_dir)} --host 127.0.0.1"
              "   (then http://127.0.0.1:6006)")
    if run_dir:
        print(f"  run folder   {shown(run_dir)}"
              "  (best/ model, metrics.json, evaluation.json, plots/)")
    return 0 if state is not None and state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
