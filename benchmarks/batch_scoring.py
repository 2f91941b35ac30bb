"""Batch scoring throughput (rows/s): ``multitask-bert score`` on the sample tasks and on SST-2.

    python benchmarks/batch_scoring.py --json benchmarks/results/batch_scoring.json
    python benchmarks/batch_scoring.py --model tiny --runtimes torch    # a smoke run

What is timed is :func:`multitask_bert.scoring.score_files` after the model is loaded: read
the file in chunks, check every row, tokenise, forward, decode every head, write Parquet
(and rejects). Inputs: the validation rows of the five sample tasks (one JSONL with a
``task`` column, repeated ``--repeat`` times) with a model that has their heads, and SST-2
validation (872 sentences, ``../shared/datasets/sst2``) with a one-task model (the packaged
MiniLM encoder; heads untrained: speed does not depend on the weights). Best of
``--trials`` runs, per runtime.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _common import (
    DEFAULT_DATASETS,
    MODELS,
    format_table,
    load_1min,
    machine_info,
    quiet_logs,
    write_json,
)
from onnx_latency import sample_model


def sst2_model(folder: Path, model: str) -> Path:
    from multitask_bert.config import EncoderConfig
    from multitask_bert.models.multitask import build_model, load_tokenizer
    from multitask_bert.tasks import TaskSpec

    task = TaskSpec(name="sst2", type="sequence", train="unused.jsonl",
                    heads=[{"name": "sentiment", "type": "classification", "column": "label"}])
    encoder = EncoderConfig(**MODELS[model])
    build_model(encoder, [task], {"sst2": {"sentiment": ["0", "1"]}}, seed=0).save(
        folder, load_tokenizer(encoder.resolve_path()))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtimes", default="torch,onnx")
    parser.add_argument("--repeat", type=int, default=2, help="copies of the sample rows")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--datasets-dir", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    import torch

    from multitask_bert.onnx_export import export_onnx
    from multitask_bert.scoring import score_files

    torch.set_num_threads(args.threads)
    load_before = load_1min()
    results = []
    with tempfile.TemporaryDirectory() as tmp, quiet_logs():
        root = Path(tmp)
        folder, rows = sample_model(root / "sample", args.model)
        sample_file = root / "sample-tasks.jsonl"
        lines = [json.dumps(row) for task_rows in rows.values() for row in task_rows]
        sample_file.write_text("\n".join(lines * args.repeat) + "\n")
        inputs = [("sample tasks (5 tasks, 7 heads)", folder, sample_file, None)]
        sst2 = args.datasets_dir / "sst2" / "validation.jsonl"
        if sst2.is_file():
            inputs.append(("SST-2 validation", sst2_model(root / "sst2", args.model), sst2,
                           "sst2"))
        else:
            print(f"SST-2 not found at {sst2}: skipped")
        for name, model_dir, source, task in inputs:
            if "onnx" in args.runtimes:
                export_onnx(model_dir)
            for runtime in args.runtimes.split(","):
                best = None
                for trial in range(args.trials):
                    summary = score_files(str(model_dir), [source],
                                          root / f"out-{runtime}-{trial}.parquet", task=task,
                                          runtime=runtime)
                    if best is None or summary.rows_per_s > best.rows_per_s:
                        best = summary
                assert best is not None and best.rejected == 0, best
                results.append({"input": name, "rows": best.rows, "runtime": runtime,
                                "threads": args.threads, "seconds": best.seconds,
                                "rows_per_s": best.rows_per_s})
                print(f"{name:<34} {runtime:<6} {best.rows:>5} rows {best.seconds:6.1f} s "
                      f"{best.rows_per_s:7.1f} rows/s", flush=True)
    columns = [("input", "input"), ("rows", "rows"), ("runtime", "runtime"),
               ("threads", "threads"), ("seconds", "s"), ("rows_per_s", "rows/s")]
    print("\n" + format_table(results, columns))
    print(f"\nmodel {args.model}; load before {load_before}, after {load_1min()}")
    write_json(args.json, {"machine": machine_info(), "command": " ".join(sys.argv),
                           "model": args.model, "threads": args.threads,
                           "load_1min_before": load_before, "load_1min_after": load_1min(),
                           "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
