"""PyTorch vs ONNX Runtime: prediction latency on CPU at batch 1 and batch 32.

    python benchmarks/onnx_latency.py --json benchmarks/results/onnx_latency.json
    python benchmarks/onnx_latency.py --model tiny --repeats 5       # a smoke run

The model: the packaged MiniLM (or a random tiny BERT) with the heads of the sample tasks
(news_tagging: ner + pos; reviews; questions: coarse + fine; similarity; topics), saved once and
exported once to ONNX (one graph for every head). Latency is one ``Predictor.output_rows`` call
(tokenise, forward, decode every head), the same call the MLflow pyfunc makes, on real rows of
the sample tasks' validation splits; the median and p90 of ``--repeats`` calls after a warm-up,
per runtime, batch size and task. Same thread count for both runtimes (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import MODELS, REPO, format_table, load_1min, machine_info, quiet_logs, write_json


def sample_model(folder: Path, model: str) -> tuple[Path, dict[str, list[dict]]]:
    """A model with the sample tasks' heads (vocabularies from their train splits, through
    the tokenise-and-cache step) and rows of their validation splits."""
    from multitask_bert.config import ExperimentConfig
    from multitask_bert.data.prepare import prepare_data
    from multitask_bert.data.sources import read_split
    from multitask_bert.models.multitask import build_model, load_tokenizer
    from multitask_bert.registry.signature import example_row

    overrides = [f"cache_dir={REPO / '.work' / 'cache'}"]
    overrides += [f"encoder.{key}={json.dumps(value)}" for key, value in MODELS[model].items()]
    config = ExperimentConfig.load(REPO / "configs" / "quickstart.yaml", overrides).resolve()
    cached = prepare_data(config)
    vocab = {name: entry.label_vocab for name, entry in cached.items()}
    rows = {task.name: [example_row(task, e) for e in read_split(task, "validation")]
            for task in config.tasks}
    build_model(config.encoder, config.tasks, vocab, seed=0).save(
        folder, load_tokenizer(config.encoder.resolve_path()))
    return folder, rows


def timed(call, repeats: int) -> list[float]:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    import torch

    from multitask_bert.inference import Predictor
    from multitask_bert.onnx_export import export_onnx

    torch.set_num_threads(args.threads)
    load_before = load_1min()
    with tempfile.TemporaryDirectory() as tmp, quiet_logs():
        folder, rows = sample_model(Path(tmp) / "best", args.model)
        started = time.perf_counter()
        export_onnx(folder)
        export_s = time.perf_counter() - started
        predictors = {"torch": Predictor(folder, batch_size=64),
                      "onnx": Predictor(folder, batch_size=64, runtime="onnx")}
        results = []
        for batch in (int(b) for b in args.batches.split(",")):
            for task, task_rows in rows.items():
                chunk = (task_rows * (batch // len(task_rows) + 1))[:batch]
                row = {"batch": batch, "task": task}
                for runtime, predictor in predictors.items():
                    times = timed(lambda p=predictor, c=chunk: p.output_rows(c), args.repeats)
                    row[f"{runtime}_ms"] = statistics.median(times)
                    row[f"{runtime}_p90_ms"] = sorted(times)[int(0.9 * (len(times) - 1))]
                row["speedup"] = row["torch_ms"] / row["onnx_ms"]
                results.append(row)
                print(f"batch {batch:>3} {task:<13} torch {row['torch_ms']:7.1f} ms  "
                      f"onnx {row['onnx_ms']:7.1f} ms  x{row['speedup']:.2f}", flush=True)
    summary = []
    for batch in sorted({r["batch"] for r in results}):
        picked = [r for r in results if r["batch"] == batch]
        torch_ms = statistics.mean(r["torch_ms"] for r in picked)
        onnx_ms = statistics.mean(r["onnx_ms"] for r in picked)
        summary.append({"batch": batch, "task": "mean of tasks", "torch_ms": torch_ms,
                        "onnx_ms": onnx_ms, "speedup": torch_ms / onnx_ms})
    columns = [("batch", "batch"), ("task", "task"), ("torch_ms", "PyTorch ms (median)"),
               ("onnx_ms", "ONNX Runtime ms (median)"), ("speedup", "PyTorch / ORT")]
    print("\n" + format_table(results + summary, columns))
    print(f"\nexport: {export_s:.1f} s; threads {args.threads}; load before {load_before}, "
          f"after {load_1min()}")
    write_json(args.json, {"machine": machine_info(), "command": " ".join(sys.argv),
                           "model": args.model, "threads": args.threads,
                           "repeats": args.repeats, "export_seconds": round(export_s, 1),
                           "load_1min_before": load_before, "load_1min_after": load_1min(),
                           "results": results, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
