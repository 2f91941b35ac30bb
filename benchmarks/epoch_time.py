"""One timed training epoch of CoNLL-2003 + TREC + SST-2, as ``configs/benchmark.yaml``
trains them (its tasks, heads, batch sizes, sampling and max_length), end to end through our
Trainer: tokenise (cold cache), one epoch of training, the end-of-epoch evaluation on the
validation splits, the saves. MiniLM-size encoder with random weights by default (speed
only; ``--model minilm`` for the packaged weights).

    python benchmarks/epoch_time.py --json epoch.json                 # the full datasets
    python benchmarks/epoch_time.py --limit 64 --device cpu           # a dry run, seconds
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # benchmarks/_common.py; puts the repo on sys.path
import torch
import yaml
from throughput import Tally, _StepClock, unpadded_arg

from multitask_bert.config import ExperimentConfig
from multitask_bert.models.multitask import build_model, load_tokenizer
from multitask_bert.models.packing import attention_backends
from multitask_bert.pipeline import load_datasets, prepare_data
from multitask_bert.training.meter import peak_flops
from multitask_bert.training.mfu import mfu
from multitask_bert.training.trainer import Trainer

BENCHMARK_CONFIG = _common.REPO / "configs" / "benchmark.yaml"


def epoch_config(args: argparse.Namespace, output_dir: Path) -> ExperimentConfig:
    """configs/benchmark.yaml for one epoch: data from ``--datasets-dir``, test splits left
    out, no tracking, no periodic checkpoints, the chosen encoder and device."""
    raw = yaml.safe_load(BENCHMARK_CONFIG.read_text())
    for task in raw["tasks"]:
        task.pop("test", None)
        for split in ("train", "validation"):
            if split in task:
                source: dict[str, Any] = {
                    "path": str(args.datasets_dir / task["name"] / f"{split}.jsonl")}
                if args.limit:
                    source["limit"] = args.limit
                task[split] = source
    raw["name"] = f"epoch-{args.model}"
    raw["encoder"] = {**_common.MODELS[args.model]}
    raw["training"].update({"epochs": 1, "eval_strategy": "epoch", "device": args.device,
                            "checkpoint_every_n_steps": None, "progress_bar": False,
                            "resume": False, "unpadded": args.unpadded, "seed": args.seed})
    if args.batch_size:
        raw["training"]["batch_size"] = args.batch_size
    raw["logging"] = {"backend": "none"}
    raw["output_dir"] = str(output_dir / "run")
    raw["cache_dir"] = str(output_dir / "cache")
    return ExperimentConfig.from_dict(raw)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mtb-epoch-") as tmp:
        config = epoch_config(args, Path(tmp)).resolve()
        tokenizer = load_tokenizer(config.encoder.resolve_path())
        start = time.perf_counter()
        cached = prepare_data(config, tokenizer)
        tokenize_s = time.perf_counter() - start
        train = load_datasets(config, cached, "train", tokenizer.pad_token_id)
        evals = load_datasets(config, cached, "validation", tokenizer.pad_token_id)
        vocab = {n: c.label_vocab for n, c in cached.items()}
        model = build_model(config.encoder, config.tasks, vocab, seed=config.training.seed)
        probe = Trainer(config, copy.deepcopy(model), tokenizer, train, evals,
                        logger=_StepClock())
        total_steps, plan = probe.total_steps, probe.epoch_plan(0)
        probe.close()
        del probe
        clock = _StepClock()
        config = config.model_copy(update={"logging": config.logging.model_copy(
            update={"log_every_n_steps": total_steps})})
        with _common.PeakMemory(args.device) as memory:
            trainer = Trainer(config, model, tokenizer, train, evals, logger=clock)
            begin = time.perf_counter()
            result = trainer.train()
            train_call = time.perf_counter() - begin
            trainer.close()
    train_log = next(t for step, t, m in clock.events if "train/loss" in m)
    eval_log = next((t for step, t, m in clock.events if "eval/score" in m), train_log)
    tally = Tally(model.encoder.config)
    for task, indices in plan:
        lengths = [train[task].lengths[i] for i in indices]
        width = None if trainer.unpadded else -(-max(lengths) // train[task].pad_to_multiple_of
                                                ) * train[task].pad_to_multiple_of
        tally.add(lengths, width)
    seconds = train_log - begin
    peak = peak_flops(trainer.device) or float("nan")
    return {
        "model": args.model,
        "device": str(trainer.device),
        "unpadded": trainer.unpadded,
        "packed_attention": (attention_backends(trainer.device).describe()
                             if trainer.unpadded else None),
        "train_examples": {n: len(d) for n, d in train.items()},
        "eval_examples": {n: len(d) for n, d in evals.items()},
        "steps": total_steps,
        "tokenize_cold_s": round(tokenize_s, 2),
        "epoch_train_s": round(seconds, 2),
        "evaluation_s": round(eval_log - train_log, 2),
        "saves_and_rest_s": round(train_call - (eval_log - begin), 2),
        "train_call_s": round(train_call, 2),
        "real_tokens": tally.real_tokens,
        "padded_tokens": tally.padded_tokens,
        "pad_share": 1 - tally.real_tokens / tally.padded_tokens,
        "real_tokens_per_s": tally.real_tokens / seconds,
        "samples_per_s": tally.samples / seconds,
        "mfu": mfu(tally.model_flops / seconds, peak) if peak == peak else None,
        "peak_flops": peak,
        "peak_mem_mb": memory.peak_mb,
        "peak_mem_method": memory.method,
        "validation_score": result.best_score,
        "validation_score_metric": result.score_metric,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm-random", choices=list(_common.MODELS))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--unpadded", type=unpadded_arg, default="auto")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: configs/benchmark.yaml's (32; TREC 16)")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most this many rows per task and split (a dry run)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--datasets-dir", type=Path, default=_common.DEFAULT_DATASETS)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)
    _common.check_datasets(args.datasets_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = _common.machine_info()
    with _common.quiet_logs():
        out = run(args)
    report = {"benchmark": "epoch_time", "command": " ".join(sys.argv), "machine": machine,
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "result": out}
    rows = [{"measure": key, "value": value} for key, value in out.items()
            if not isinstance(value, dict)]
    print(f"\n### One epoch of CoNLL-2003 + TREC + SST-2 ({args.model}, {out['device']})\n")
    print(_common.format_table(rows, [("measure", "measure"), ("value", "value")]))
    print(f"\nexamples: train {out['train_examples']}, validation {out['eval_examples']}")
    _common.write_json(args.json_path, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
