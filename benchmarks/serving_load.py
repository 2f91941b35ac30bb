"""Serving under load: `mlflow models serve` of the champion, concurrent clients, mixed requests.

    python benchmarks/serving_load.py --json benchmarks/results/serving_load.json
    python benchmarks/serving_load.py --workers 1,2 --threads 1,2 --requests 1000   # the grid
    python benchmarks/serving_load.py --model-uri models:/multitask-bert/3 --requests 200

For each combination of ``--workers`` (uvicorn worker processes: ``mlflow models serve
--workers N``) and ``--threads`` (torch intra-op threads per worker: ``OMP_NUM_THREADS`` and
``MKL_NUM_THREADS`` in the server's environment), the script starts the server on 127.0.0.1
on a free port in its own process group, waits for ``/health`` and for every worker's
"Application startup complete", sends a warm-up, then ``--requests`` requests from
``--clients`` concurrent clients (threads, each one request at a time: a closed loop) and
stops the server by its process group id. Requests mix the model's tasks that have rows in
``tasks_data/`` (their test and validation rows; sequence, pair and token tasks) with 1 to
``--max-rows`` rows each, in the four request formats (``dataframe_records``,
``dataframe_split``, ``inputs``, ``instances``); a token row goes as ``tokens`` or as
``text``. A request counts as an error unless it answers 200 with one prediction per row, of
the row's task. Recorded per setting: errors (with the first messages), p50/p95/p99/max
latency, requests/s and rows/s, the server's resident memory (all its processes), and the
1-minute load average before and after.

The model: ``--model-uri`` (default ``models:/multitask-bert@champion``) in
``--tracking-uri`` (default ``$MLFLOW_TRACKING_URI``, else ``sqlite:///runs/mlflow.db``).
When it is the champion alias and none exists, ``--train minilm|tiny`` (default minilm)
trains the quickstart tasks for one epoch with ``multitask-bert train`` and registers the run
with ``multitask-bert register`` (it becomes the champion); ``--train none`` stops instead.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import MODELS, REPO, format_table, load_1min, machine_info, write_json

FORMATS = ("dataframe_records", "dataframe_split", "inputs", "instances")
COLUMNS = ("task", "text", "text_a", "text_b", "tokens")
CHAMPION = "models:/multitask-bert@champion"
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
CLI = str(Path(sys.executable).with_name("multitask-bert"))


# -- requests -----------------------------------------------------------------------------------
@dataclass
class Request:
    body: bytes
    tasks: list[str]  # the task of each row, in order: what the answer must echo
    format: str


def model_tasks(model_uri: str, tracking_uri: str, work_dir: Path) -> dict[str, dict]:
    """The served model's tasks, each with its logged input example (a request row)."""
    import mlflow

    from multitask_bert.registry import mlflow_store

    with mlflow_store(tracking_uri):
        folder = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"{model_uri}/artifacts/examples", dst_path=str(work_dir)))
    examples = {}
    for path in sorted(folder.glob("*.json")):
        body = json.loads(path.read_text())
        examples[path.stem] = body["dataframe_records"][0]
    if not examples:
        raise SystemExit(f"{model_uri}: no artifacts/examples/<task>.json; is it a "
                         "multitask-bert model?")
    return examples


def sample_rows(examples: dict[str, dict], tasks_dir: Path = REPO / "tasks_data"
                ) -> dict[str, list[dict[str, Any]]]:
    """Per task of the model, request rows from the test and validation splits of its task in
    ``tasks_dir`` (the inputs only); a task not found there keeps its logged example."""
    import yaml

    from multitask_bert.data.sources import read_split
    from multitask_bert.registry.signature import example_row
    from multitask_bert.tasks import TaskSpec

    rows: dict[str, list[dict[str, Any]]] = {}
    for task, example in examples.items():
        yaml_file = tasks_dir / f"{task}.yaml"
        if not yaml_file.is_file():
            rows[task] = [example]
            continue
        spec = TaskSpec(**yaml.safe_load(yaml_file.read_text()), base_dir=str(tasks_dir))
        rows[task] = [example_row(spec, e) for split in ("test", "validation")
                      if getattr(spec, split, None) for e in read_split(spec, split)]
    return rows


def _as_text(row: dict[str, Any]) -> dict[str, Any]:
    if "tokens" in row:
        row = {k: v for k, v in row.items() if k != "tokens"} | {"text": " ".join(row["tokens"])}
    return row


def build_requests(rows: dict[str, list[dict[str, Any]]], count: int, *, max_rows: int = 4,
                   seed: int = 0) -> list[Request]:
    """``count`` requests, cycling through the four formats, 1 to ``max_rows`` rows each.

    ``dataframe_records``, ``dataframe_split`` and ``inputs`` mix tasks; ``instances`` holds
    rows of one task, token rows as text (MLflow builds columns from them: every row needs
    the same fields, and word lists of different lengths make no column)."""
    rng = random.Random(seed)
    tasks = sorted(rows)
    requests = []
    for index in range(count):
        form = FORMATS[index % len(FORMATS)]
        size = rng.randint(1, max_rows)
        if form == "instances":
            task = rng.choice(tasks)
            chosen = [_as_text(rng.choice(rows[task])) for _ in range(size)]
        else:
            chosen = []
            for _ in range(size):
                row = rng.choice(rows[rng.choice(tasks)])
                chosen.append(_as_text(row) if "tokens" in row and rng.random() < 0.5 else row)
        if form == "dataframe_split":
            columns = [c for c in COLUMNS if any(c in r for r in chosen)]
            payload: Any = {"columns": columns, "data": [[r.get(c) for c in columns]
                                                         for r in chosen]}
        else:
            payload = chosen
        requests.append(Request(json.dumps({form: payload}).encode(),
                                [r["task"] for r in chosen], form))
    return requests


# -- the server -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(tracking_uri: str, threads: int) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                        os.environ.get("PYTHONPATH")]))}


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in the group (the server and its workers), MB."""
    total_kb = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields after "(comm)": state, ppid, pgrp
                continue
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return round(total_kb / 1024, 1)


@contextlib.contextmanager
def model_server(model_uri: str, tracking_uri: str, *, workers: int, threads: int,
                 log_path: Path, start_timeout: float = 300) -> Iterator[tuple[str, int]]:
    """``mlflow models serve`` on 127.0.0.1, a free port, its own process group; yields
    (url, process group id) once every worker has started; stops the group by its id."""
    port = free_port()
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [MLFLOW, "models", "serve", "-m", model_uri, "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
            cwd=log_path.parent, env=server_env(tracking_uri, threads), stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(server, url, workers, log_path, start_timeout)
            yield url, server.pid
        finally:
            _stop(server)


def _wait_ready(server: subprocess.Popen, url: str, workers: int, log_path: Path,
                timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited with {server.returncode}:\n"
                               + log_path.read_text()[-3000:])
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start in {timeout:.0f} s:\n"
                               + log_path.read_text()[-3000:])
        started = log_path.read_text().count("Application startup complete")
        if started >= workers:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        return
        time.sleep(0.5)


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)  # uvicorn and its workers: one group
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


# -- the clients ----------------------------------------------------------------------------------
@dataclass
class Outcome:
    seconds: float
    error: str | None = None


def send(url: str, request: Request, timeout: float = 120) -> Outcome:
    """One request; an error unless 200 with one prediction per row, of the row's task."""
    http = urllib.request.Request(f"{url}/invocations", request.body,
                                  {"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(http, timeout=timeout) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    except OSError as error:  # refused, reset, timed out
        return Outcome(time.perf_counter() - start, f"{request.format}: {error!r}")
    seconds = time.perf_counter() - start
    shown = text[:300].decode(errors="replace")
    if status != 200:
        return Outcome(seconds, f"{request.format}: HTTP {status}: {shown}")
    try:
        predictions = json.loads(text)["predictions"]
        answered = [p["task"] for p in predictions if "predictions" in p]
    except (ValueError, KeyError, TypeError) as error:
        return Outcome(seconds, f"{request.format}: unreadable answer ({error!r}): {shown}")
    if answered != request.tasks:
        return Outcome(seconds, f"{request.format}: answered tasks {answered} for rows of "
                                f"{request.tasks}: {shown}")
    return Outcome(seconds)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def drive(url: str, requests: list[Request], clients: int) -> dict[str, Any]:
    """``clients`` threads, each sending the next request of the list when its last one is
    answered, until all are sent. Latency: send to last byte read, per request."""
    outcomes: list[Outcome | None] = [None] * len(requests)
    counter = itertools.count()
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                index = next(counter)
            if index >= len(requests):
                return
            outcomes[index] = send(url, requests[index])

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - start
    done = [o for o in outcomes if o is not None]
    errors = [o.error for o in done if o.error]
    latencies = sorted(o.seconds * 1000 for o in done)
    rows = sum(len(r.tasks) for r in requests)
    return {
        "requests": len(requests), "rows": rows, "clients": clients,
        "errors": len(errors), "first_errors": errors[:5],
        "seconds": round(wall, 3),
        "requests_per_s": round(len(requests) / wall, 2),
        "rows_per_s": round(rows / wall, 2),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(latencies[-1], 1) if latencies else math.nan,
        "formats": {f: sum(r.format == f for r in requests) for f in FORMATS},
    }


# -- one setting, end to end ----------------------------------------------------------------------
@dataclass
class LoadSettings:
    workers: int = 1
    threads: int = 1
    clients: int = 8
    requests: int = 1000
    warmup: int = 16
    max_rows: int = 4
    seed: int = 0


def run_load(model_uri: str, tracking_uri: str, settings: LoadSettings, work_dir: Path,
             rows: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Serve ``model_uri`` with ``settings``, drive it, stop it; the figures as a dict."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if rows is None:
        rows = sample_rows(model_tasks(model_uri, tracking_uri, work_dir / "examples"))
    warmup = build_requests(rows, settings.warmup, max_rows=settings.max_rows,
                            seed=settings.seed + 1)
    requests = build_requests(rows, settings.requests, max_rows=settings.max_rows,
                              seed=settings.seed)
    log_path = work_dir / f"server-w{settings.workers}-t{settings.threads}.log"
    load_before = load_1min()
    started = time.perf_counter()
    with model_server(model_uri, tracking_uri, workers=settings.workers,
                      threads=settings.threads, log_path=log_path) as (url, pgid):
        start_s = time.perf_counter() - started
        warm = drive(url, warmup, settings.clients) if warmup else {"errors": 0}
        result = drive(url, requests, settings.clients)
        rss = group_rss_mb(pgid)
    return {"workers": settings.workers, "torch_threads": settings.threads,
            "server_env": {"OMP_NUM_THREADS": str(settings.threads),
                           "MKL_NUM_THREADS": str(settings.threads),
                           "TOKENIZERS_PARALLELISM": "false"},
            "server_start_s": round(start_s, 1), "warmup_requests": settings.warmup,
            "warmup_errors": warm["errors"], **result, "server_rss_mb": rss,
            "load_1min_before": load_before, "load_1min_after": load_1min(),
            "tasks": {task: len(task_rows) for task, task_rows in rows.items()},
            "server_log": str(log_path)}


# -- a model to serve -----------------------------------------------------------------------------
def alias_exists(model_uri: str, tracking_uri: str) -> bool:
    """Whether ``models:/<name>@<alias>`` names a version in the store."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from multitask_bert.registry import mlflow_store

    name, alias = model_uri.removeprefix("models:/").split("@", 1)
    with mlflow_store(tracking_uri):
        try:
            MlflowClient().get_model_version_by_alias(name, alias)
        except MlflowException:  # no such model, or no such alias
            return False
    return True


def train_and_register(model: str, tracking_uri: str, run_dir: Path) -> None:
    """One epoch of configs/quickstart.yaml with ``multitask-bert train``, then
    ``multitask-bert register`` (the first version of a name becomes its champion)."""
    overrides = ["training.epochs=1", f"output_dir={run_dir}", "logging.backend=none"]
    overrides += [f"encoder.{key}={json.dumps(value)}" for key, value in MODELS[model].items()]
    command = [CLI, "train", "--config", str(REPO / "configs" / "quickstart.yaml")]
    for override in overrides:
        command += ["--set", override]
    print("no champion: training one:", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)
    subprocess.run([CLI, "register", "--run-dir", str(run_dir), "--tracking-uri", tracking_uri],
                   check=True, cwd=REPO)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default=CHAMPION)
    parser.add_argument("--tracking-uri", default=os.environ.get(
        "MLFLOW_TRACKING_URI", f"sqlite:///{REPO / 'runs' / 'mlflow.db'}"))
    parser.add_argument("--train", choices=["minilm", "tiny", "none"], default="minilm",
                        help="what to train and register when the champion does not exist")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--workers", default="1", help="uvicorn workers, e.g. 1 or 1,2")
    parser.add_argument("--threads", default="1", help="torch threads per worker, e.g. 1,2")
    parser.add_argument("--max-rows", type=int, default=4, help="rows per request, at most")
    parser.add_argument("--warmup", type=int, default=16, help="requests sent before timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=REPO / ".work" / "serving-load")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    args.work_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    load_before = load_1min()
    print(f"1-min load before: {load_before}", flush=True)
    trained = None
    if args.model_uri == CHAMPION and not alias_exists(args.model_uri, args.tracking_uri):
        if args.train == "none":
            sys.exit(f"no {args.model_uri} in {args.tracking_uri}; train one (make demo) or "
                     "pass --model-uri / --train minilm")
        train_and_register(args.train, args.tracking_uri, args.work_dir / f"model-{args.train}")
        trained = f"{args.train}: configs/quickstart.yaml, 1 epoch, registered as the champion"
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        rows = sample_rows(model_tasks(args.model_uri, args.tracking_uri, Path(tmp)))
    results = []
    for workers, threads in itertools.product(_ints(args.workers), _ints(args.threads)):
        settings = LoadSettings(workers=workers, threads=threads, clients=args.clients,
                                requests=args.requests, warmup=args.warmup,
                                max_rows=args.max_rows, seed=args.seed)
        result = run_load(args.model_uri, args.tracking_uri, settings, args.work_dir, rows)
        results.append(result)
        print(f"workers {workers} threads {threads}: {result['errors']} errors, "
              f"{result['requests_per_s']} req/s, p50 {result['p50_ms']} ms, p95 "
              f"{result['p95_ms']} ms, p99 {result['p99_ms']} ms (load "
              f"{result['load_1min_before']} -> {result['load_1min_after']})", flush=True)
        for error in result["first_errors"]:
            print("  error:", error)
    columns = [("workers", "workers"), ("torch_threads", "torch threads"),
               ("clients", "clients"), ("requests", "requests"), ("errors", "errors"),
               ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"),
               ("max_ms", "max ms"), ("requests_per_s", "req/s"), ("rows_per_s", "rows/s"),
               ("server_rss_mb", "server RSS MB"), ("load_1min_before", "load before"),
               ("load_1min_after", "load after")]
    print("\n" + format_table(results, columns))
    clean = [r for r in results if r["errors"] == 0 and r["warmup_errors"] == 0]
    best = max(clean, key=lambda r: r["requests_per_s"]) if clean else None
    load_after = load_1min()
    if best:
        print(f"\nbest: --workers {best['workers']} with OMP_NUM_THREADS="
              f"{best['torch_threads']} ({best['requests_per_s']} req/s, p95 "
              f"{best['p95_ms']} ms)")
    print(f"model {args.model_uri}; 1-min load before {load_before}, after {load_after}"
          + ("  (under load: not a speed figure; rerun quiet)" if max(load_before, load_after)
             > 1 else ""))
    write_json(args.json, {"machine": machine, "command": " ".join(sys.argv),
                           "model_uri": args.model_uri, "trained_here": trained,
                           "load_1min_before": load_before,
                           "load_1min_after": load_after,
                           "best": {k: best[k] for k in ("workers", "torch_threads")}
                           if best else None, "results": results})
    return 0 if clean and len(clean) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
