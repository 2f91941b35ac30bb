"""Tokenise-and-cache throughput (sentences/s): our Parquet cache vs a plain ``datasets.map``.

On the training splits of CoNLL-2003, TREC and SST-2 (all rows, or a seeded sample of
``--examples`` per task), with the same fast tokenizer (the packaged MiniLM's) and
``max_length``:

  ours cold     ``tokenize_and_cache`` into an empty temporary cache: read the JSONL, build
                label vocabularies, tokenise (batched, fast tokenizer), align labels to the
                first sub-word, write Parquet + meta.json
  ours cached   the same call again: fingerprint the inputs (hash of the raw files), find
                the entry (a cache hit); ``+ load`` also reads the Parquet into the
                in-memory ``TaskDataset`` that training uses
  map cold      ``datasets.load_dataset("json")`` + ``Dataset.map(batched=True)`` with the
                same tokenizer (labels to ids; tags aligned to the first sub-word as in
                Hugging Face's run_ner example) into an empty datasets cache
  map cached    the same calls again (datasets' own fingerprint cache)

    python benchmarks/tokenize_cache.py --json tokenize.json
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # benchmarks/_common.py; puts the repo on sys.path

from multitask_bert.config import ExperimentConfig
from multitask_bert.data.cache import tokenize_and_cache
from multitask_bert.data.dataset import TaskDataset
from multitask_bert.models.multitask import load_tokenizer
from multitask_bert.tasks import TaskSpec

TARGET_CACHED_SPEEDUP = 20.0


def run_ours(tasks: list[TaskSpec], tokenizer: Any, cache_dir: Path, max_length: int,
             seed: int, load: bool = False) -> tuple[float, int, bool]:
    """Seconds, examples, all-hits for ``tokenize_and_cache`` over every task."""
    start, examples, hits = time.perf_counter(), 0, True
    for task in tasks:
        cached = tokenize_and_cache(task, tokenizer, max_length=max_length,
                                    cache_dir=cache_dir, seed=seed, splits=["train"])
        examples += cached.stats["train"]["examples"]
        hits = hits and cached.cache_hit
        if load:
            TaskDataset.from_parquet(cached.splits["train"], task, cached.label_vocab,
                                     pad_token_id=tokenizer.pad_token_id or 0)
    return time.perf_counter() - start, examples, hits


def run_map(tasks: list[TaskSpec], tokenizer: Any, cache_dir: Path, max_length: int,
            limit: int | None, seed: int) -> tuple[float, int]:
    """Seconds and examples for load_dataset("json") + batched map, over every task."""
    import datasets

    start, examples = time.perf_counter(), 0
    for task in tasks:
        path = task.resolve_path(task.train)
        data = datasets.load_dataset("json", data_files=path, split="train",
                                     cache_dir=str(cache_dir))
        if limit and limit < len(data):  # the same seeded subset as our `limit`
            data = data.select(sorted(random.Random(seed).sample(range(len(data)), limit)))
        vocab = {h.field: {label: i for i, label in enumerate(
            sorted({str(x) for x in _flatten(data[h.field])}))} for h in task.heads}
        function = _token_function if task.type == "token" else _sequence_function
        data = data.map(function, batched=True, remove_columns=data.column_names,
                        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length,
                                   "heads": [h.field for h in task.heads], "vocab": vocab})
        examples += len(data)
    return time.perf_counter() - start, examples


def _flatten(values: list[Any]) -> list[Any]:
    return [x for v in values for x in v] if values and isinstance(values[0], list) else values


def _sequence_function(batch, tokenizer, max_length, heads, vocab):
    out = tokenizer(batch["text"], truncation=True, max_length=max_length)
    for head in heads:
        out[head] = [vocab[head][str(x)] for x in batch[head]]
    return out


def _token_function(batch, tokenizer, max_length, heads, vocab):
    out = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True,
                    max_length=max_length)
    for head in heads:
        aligned = []
        for row, tags in enumerate(batch[head]):
            previous, labels = None, []
            for word in out.word_ids(row):
                labels.append(-100 if word is None or word == previous
                              else vocab[head][str(tags[word])])
                previous = word
            aligned.append(labels)
        out[head] = aligned
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=None,
                        help="a seeded sample of N training rows per task (default: all)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3,
                        help="cached runs to time (the median is reported)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-map", action="store_true", help="skip the datasets.map baseline")
    parser.add_argument("--datasets-dir", type=Path, default=_common.DEFAULT_DATASETS)
    parser.add_argument("--json", dest="json_path", default=None)
    parser.add_argument("--results-md", default=None,
                        help="append a section to this Markdown file (benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    _common.check_datasets(args.datasets_dir)
    import datasets

    datasets.disable_progress_bars()
    config = ExperimentConfig.from_dict(
        {"tasks": _common.benchmark_tasks(args.datasets_dir, args.examples)})
    tasks = list(config.tasks)
    tokenizer = load_tokenizer(config.encoder.resolve_path())
    machine = _common.machine_info()
    print(f"machine: {machine['nproc']} cpus ({machine['cpu']}), load "
          f"{machine['load_avg_1_5_15']}")

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mtb-bench-tok-") as tmp, _common.quiet_logs():
        ours_dir, map_dir = Path(tmp, "ours"), Path(tmp, "hf")
        seconds, n, hit = run_ours(tasks, tokenizer, ours_dir, args.max_length, args.seed)
        assert not hit, "the cold run found a cache entry"
        rows.append(_row("ours", "cold", n, seconds))
        cached = [run_ours(tasks, tokenizer, ours_dir, args.max_length, args.seed)
                  for _ in range(args.repeats)]
        assert all(hit for _, _, hit in cached), "the cached run missed the cache"
        rows.append(_row("ours", "cached", n, statistics.median(s for s, _, _ in cached)))
        loaded = [run_ours(tasks, tokenizer, ours_dir, args.max_length, args.seed, load=True)
                  for _ in range(args.repeats)]
        rows.append(_row("ours", "cached + load", n, statistics.median(s for s, _, _ in loaded)))
        if not args.no_map:
            seconds, n_map = run_map(tasks, tokenizer, map_dir, args.max_length, args.examples,
                                     args.seed)
            rows.append(_row("datasets.map", "cold", n_map, seconds))
            again = [run_map(tasks, tokenizer, map_dir, args.max_length, args.examples,
                             args.seed)[0] for _ in range(args.repeats)]
            rows.append(_row("datasets.map", "cached", n_map, statistics.median(again)))

    by = {(r["method"], r["run"]): r for r in rows}
    cold = by["ours", "cold"]["seconds"]
    for row in rows:
        own_cold = by[row["method"], "cold"]["seconds"]
        row["speedup_vs_own_cold"] = own_cold / row["seconds"]
    summary = {
        "ours_cached_speedup": cold / by["ours", "cached"]["seconds"],
        "ours_cached_plus_load_speedup": cold / by["ours", "cached + load"]["seconds"],
        "target_cached_speedup": TARGET_CACHED_SPEEDUP,
    }
    summary["target_met"] = summary["ours_cached_speedup"] >= TARGET_CACHED_SPEEDUP
    if ("datasets.map", "cold") in by:
        summary["ours_cold_over_map_cold"] = (by["datasets.map", "cold"]["seconds"] / cold)
    load_end = _common.load_1min()
    table = _common.format_table(rows, [("method", "method"), ("run", "run"),
                                        ("examples", "sentences"), ("seconds", "s"),
                                        ("sentences_per_s", "sentences/s"),
                                        ("speedup_vs_own_cold", "x vs own cold")])
    lines = [f"- ours cached vs cold: {summary['ours_cached_speedup']:.0f}x (target >= "
             f"{TARGET_CACHED_SPEEDUP:.0f}x: {'met' if summary['target_met'] else 'NOT met'}); "
             f"with loading the Parquet into memory: "
             f"{summary['ours_cached_plus_load_speedup']:.0f}x"]
    if "ours_cold_over_map_cold" in summary:
        lines.append(f"- ours cold vs datasets.map cold: "
                     f"{summary['ours_cold_over_map_cold']:.2f}x as fast")
    body = "\n".join([f"{', '.join(t.name for t in tasks)} (train splits, "
                      f"{'all rows' if not args.examples else f'{args.examples} rows each'}), "
                      f"max_length {args.max_length}; cached rows: median of {args.repeats}",
                      "", table, "", *lines])
    print("\n" + body)
    _common.write_json(args.json_path, {
        "benchmark": "tokenize", "command": " ".join(sys.argv), "machine": machine,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows, "summary": summary,
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]})
    _common.append_markdown(args.results_md, _common.results_section(
        "Tokenise and cache", machine,
        f"{machine['load_avg_1_5_15'][0]} at start, {load_end} at end", body))
    return 0


def _row(method: str, run: str, examples: int, seconds: float) -> dict[str, Any]:
    return {"method": method, "run": run, "examples": examples, "seconds": round(seconds, 4),
            "sentences_per_s": examples / max(seconds, 1e-9)}


if __name__ == "__main__":
    sys.exit(main())
