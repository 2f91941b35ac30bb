"""Prefect overhead: wall time of the ``train-multitask`` flow minus the time of its work.

Runs the same short experiment twice, each from an empty cache and an empty MLflow store:

  library   the flow's steps as plain library calls in this process, no Prefect:
            tokenise (``pipeline.prepare_data``), train (``pipeline.train_experiment``),
            evaluate (``pipeline.evaluate_saved_model`` on validation and test, the metric
            plots, eval metrics to MLflow), register (``pipeline.register_run``)
  flow      ``flows.train_multitask.train_multitask`` against a Prefect API: a temporary
            server (``prefect_test_harness``; its start-up is reported, not counted) or
            ``--api-url`` (e.g. the server of ``make demo``)

Overhead = flow wall time - library wall time, absolute and as % of the flow. The flow's
task runs (from the Prefect API) and a child interpreter's start-up (the flow trains in a
child process) show where it goes. Default: the packaged MiniLM on the five sample tasks
with ``--max-steps`` sized for about 2 minutes of work on a quiet 2-core CPU.

    python benchmarks/flow_overhead.py --json flow_overhead.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # benchmarks/_common.py; puts the repo on sys.path
import yaml

SAMPLE_TASKS = ["news_tagging", "reviews", "questions", "similarity", "topics"]
TARGET_OVERHEAD_PCT = 10.0


def experiment(workspace: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The run's config (one per workspace: own cache, run folder and MLflow store)."""
    # as many epochs as max_steps needs (the sample tasks hold 125 batches of 16 an epoch);
    # the evaluate step scores the final model, so no evaluation between epochs
    training: dict[str, Any] = {"epochs": 1000, "max_steps": args.max_steps,
                                "eval_strategy": "no", "batch_size": args.batch_size,
                                "learning_rate": 1e-4, "seed": 42, "progress_bar": False}
    if args.threads:
        training["num_threads"] = args.threads
    return {
        "name": "flow-overhead",
        "encoder": _common.MODELS[args.model],
        "tasks": [str(_common.REPO / "tasks_data" / f"{t}.yaml") for t in SAMPLE_TASKS],
        "max_length": args.max_length,
        "training": training,
        "logging": {"backend": "mlflow", "tracking_uri": f"sqlite:///{workspace}/mlflow.db"},
        "output_dir": str(workspace / "runs" / "flow-overhead"),
        "cache_dir": str(workspace / "cache"),
    }


def library_run(config_path: Path, model_name: str) -> dict[str, float]:
    """The flow's work as library calls; seconds per step."""
    from multitask_bert.config import ExperimentConfig
    from multitask_bert.evaluation.evaluator import flatten_metrics, major_score
    from multitask_bert.evaluation.plots import save_metric_plots
    from multitask_bert.models.multitask import load_tokenizer
    from multitask_bert.pipeline import (
        evaluate_saved_model,
        prepare_data,
        register_run,
        train_experiment,
    )
    from multitask_bert.tracking import create_logger

    times: dict[str, float] = {}
    start = time.perf_counter()
    config = ExperimentConfig.load(config_path)
    cached = prepare_data(config, load_tokenizer(config.encoder.resolve_path()))
    times["tokenize"] = time.perf_counter() - start

    mark = time.perf_counter()
    result = train_experiment(config, cached)
    times["train"] = time.perf_counter() - mark

    mark = time.perf_counter()
    run_dir = Path(result.output_dir)
    metrics = {"validation": evaluate_saved_model(run_dir / "best", config)}
    if any(t.test is not None for t in config.tasks):
        metrics["test"] = evaluate_saved_model(run_dir / "best", config, split="test")
    heads = {t.name: list(t.heads) for t in config.tasks if t.name in metrics["validation"]}
    score = major_score(metrics["validation"], config.training.early_stopping.metric, heads)
    save_metric_plots(metrics["validation"], run_dir / "plots")
    logger = create_logger("mlflow", output_dir=run_dir, experiment_name=config.name,
                           run_name=config.name, tracking_uri=config.logging.tracking_uri,
                           resume_run_id=result.run_id)
    try:
        for split, values in metrics.items():
            logger.log_metrics(flatten_metrics(values, prefix=split), step=0)
        logger.log_dict(metrics, "evaluation.json")
    finally:
        logger.close()
    times["evaluate"] = time.perf_counter() - mark

    mark = time.perf_counter()
    register_run(run_dir, model_name=model_name, tracking_uri=config.logging.tracking_uri,
                 config=config, score=score)
    times["register"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - start
    return times


def flow_run(config_path: Path, model_name: str) -> tuple[float, dict[str, Any], dict]:
    """Wall seconds of the flow, its result, and its task runs' durations."""
    from flows.train_multitask import TrainParameters, train_multitask

    params = TrainParameters(config_path=str(config_path), force=True, model_name=model_name)
    start = time.perf_counter()
    state = train_multitask(params, return_state=True)
    seconds = time.perf_counter() - start
    result = state.result()
    return seconds, result, task_run_times(state)


def task_run_times(state: Any) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        flow = client.read_flow_run(flow_run_id)
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[flow_run_id])))
    tasks = {run.name: {"run_s": round(run.total_run_time.total_seconds(), 3),
                        "start": run.start_time.timestamp() if run.start_time else None,
                        "end": run.end_time.timestamp() if run.end_time else None,
                        "state": run.state.name if run.state else None} for run in runs}
    return {"flow_run_s": round(flow.total_run_time.total_seconds(), 3), "tasks": tasks}


def span(tasks: dict[str, Any], prefix: str) -> float:
    """Wall seconds from the first start to the last end of the task runs named
    ``prefix...`` (the tokenise tasks run concurrently)."""
    runs = [v for k, v in tasks.items() if k.startswith(prefix) and v["start"] and v["end"]]
    if not runs:
        return 0.0
    return max(r["end"] for r in runs) - min(r["start"] for r in runs)


def child_start_seconds() -> float:
    """A fresh interpreter importing what the training child imports before it trains."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import multitask_bert.cli, multitask_bert.pipeline,"
                    " torch, transformers, mlflow"], check=True, cwd=_common.REPO)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", choices=list(_common.MODELS))
    parser.add_argument("--max-steps", type=int, default=600,
                        help="training steps (600 with MiniLM: about 2 minutes of work on a "
                        "quiet 2-core CPU with 2 threads; 400 with --threads 1)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None,
                        help="training.num_threads (both runs; the flow's child too)")
    parser.add_argument("--api-url", default=None,
                        help="a running Prefect API; default: a temporary test server")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    parser.add_argument("--json", dest="json_path", default=None)
    parser.add_argument("--results-md", default=None,
                        help="append a section to this Markdown file (benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="mtb-bench-flow-"))
    # Prefect settings before prefect is imported: its own home, results and quiet logs.
    os.environ["PREFECT_HOME"] = str(root / "prefect")
    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(root / "prefect-results")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if args.api_url:
        os.environ["PREFECT_API_URL"] = args.api_url
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    machine = _common.machine_info()
    print(f"machine: {machine['nproc']} cpus ({machine['cpu']}), load "
          f"{machine['load_avg_1_5_15']}; workspace {root}")
    configs = {}
    for name in ("library", "flow"):
        workspace = root / name
        workspace.mkdir(parents=True)
        configs[name] = workspace / "experiment.yaml"
        configs[name].write_text(yaml.safe_dump(experiment(workspace, args), sort_keys=False))

    load_before = _common.load_1min()
    with _common.quiet_logs():
        library = library_run(configs["library"], "flow-overhead")
        print(f"library: {library['total']:.1f} s")
        load_between = _common.load_1min()
        harness_s = 0.0
        with contextlib.ExitStack() as stack:
            if not args.api_url:
                from prefect.testing.utilities import prefect_test_harness

                mark = time.perf_counter()
                stack.enter_context(prefect_test_harness(server_startup_timeout=120))
                harness_s = time.perf_counter() - mark
            flow_s, result, prefect_times = flow_run(configs["flow"], "flow-overhead")
        print(f"flow: {flow_s:.1f} s")
    load_after = _common.load_1min()
    child_s = child_start_seconds()

    overhead = flow_s - library["total"]
    summary = {
        "flow_s": round(flow_s, 3),
        "library_s": round(library["total"], 3),
        "overhead_s": round(overhead, 3),
        "overhead_pct_of_flow": 100 * overhead / flow_s,
        "target_pct": TARGET_OVERHEAD_PCT,
        "target_met": 100 * overhead / flow_s <= TARGET_OVERHEAD_PCT,
    }
    steps = [("tokenize", "tokenize-"), ("train", "train"), ("evaluate", "evaluate"),
             ("register", "register")]
    rows = []
    for step, prefix in steps:
        flow_task = span(prefect_times["tasks"], prefix)
        rows.append({"step": step, "library_s": library[step], "flow_task_s": flow_task,
                     "difference_s": flow_task - library[step]})
    in_tasks = sum(r["flow_task_s"] for r in rows)
    rows.append({"step": "(between tasks: flow start, config, champion look-ups, state, "
                 "results)", "flow_task_s": flow_s - in_tasks})
    rows.append({"step": "total (wall)", "library_s": library["total"], "flow_task_s": flow_s,
                 "difference_s": overhead})

    table = _common.format_table(rows, [("step", "step"), ("library_s", "library s"),
                                        ("flow_task_s", "flow (task runs, wall) s"),
                                        ("difference_s", "flow - library s")])
    server = (f"Prefect API {args.api_url}" if args.api_url
              else f"temporary test server (prefect_test_harness; start-up {harness_s:.1f} s, "
                   "not counted)")
    body = "\n".join([
        f"{args.model}, {args.max_steps} training steps (batch {args.batch_size}, max_length "
        f"{args.max_length}), the 5 sample tasks; {server}", "", table, "",
        f"- Prefect overhead: {overhead:.1f} s = {summary['overhead_pct_of_flow']:.1f} % of "
        f"the flow's {flow_s:.1f} s (target <= {TARGET_OVERHEAD_PCT:.0f} %: "
        f"{'met' if summary['target_met'] else 'NOT met'})",
        f"- inside the train task: a fresh interpreter importing the training modules takes "
        f"{child_s:.1f} s here (the flow trains in a child process)"])
    print("\n" + body)
    _common.write_json(args.json_path, {
        "benchmark": "flow_overhead", "command": " ".join(sys.argv), "machine": machine,
        "args": vars(args), "load_1min": {"before": load_before, "between": load_between,
                                          "after": load_after},
        "summary": summary, "library_steps_s": library, "prefect": prefect_times,
        "rows": rows, "harness_start_s": round(harness_s, 3),
        "child_interpreter_start_s": round(child_s, 3),
        "flow_result": {k: v for k, v in result.items() if k not in ("metrics",)},
    })
    _common.append_markdown(args.results_md, _common.results_section(
        "Prefect flow overhead", machine,
        f"{load_before} before, {load_between} between the runs, {load_after} after", body))
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
