"""CoNLL-2003 ablation of the token-task options: each option alone and together.

Trains the packaged MiniLM on CoNLL-2003 read from the original column files (so document
boundaries, ``-DOCSTART-``, are kept: eng.train / eng.testa (validation) / eng.testb (test)),
once per variant, with everything else equal, and scores validation (test is reported, never
used to choose)::

    source scripts/env.sh && . .venv/bin/activate
    python benchmarks/ablation.py                                   # base, shape, context, both
    python benchmarks/ablation.py --variants base,both --subset 4000 --epochs 1   # a probe

Variants: ``base`` (sentences alone), ``shape`` (``word_shape``), ``context``
(``document_context``), ``both``, and ``uncertainty`` / ``both+uncertainty``
(``training.loss_balancing=uncertainty``). Writes JSON (``--json``) and prints a markdown
table (head x variant) with wall times and the gradient-telemetry share of training time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import _common

from multitask_bert.config import ExperimentConfig
from multitask_bert.evaluation.saved_model import evaluate_saved_model
from multitask_bert.pipeline import train_experiment

REPO = _common.REPO
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "shape": {"word_shape": True},
    "context": {"document_context": True},
    "both": {"word_shape": True, "document_context": True},
    "uncertainty": {"loss_balancing": "uncertainty"},
    "both+uncertainty": {"word_shape": True, "document_context": True,
                         "loss_balancing": "uncertainty"},
}
HEADS = (("ner", "f1"), ("pos", "accuracy"), ("chunk", "f1"))


def conll_task(datasets: Path, options: dict[str, Any], subset: int | None) -> dict[str, Any]:
    original = datasets / "conll2003" / "original"
    columns = ["tokens", "pos", "chunk", "ner"]

    def source(name: str, limit: int | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"path": str(original / name), "format": "conll",
                                "columns": columns}
        return {**spec, "limit": limit} if limit else spec

    task_options = {k: v for k, v in options.items() if k != "loss_balancing"}
    return {"name": "conll2003", "type": "token",
            "heads": [{"name": "ner", "type": "tagging", "scheme": "IOB1"},
                      {"name": "pos", "type": "tagging"},
                      {"name": "chunk", "type": "tagging", "scheme": "IOB1"}],
            "train": source("eng.train", subset), "validation": source("eng.testa"),
            "test": source("eng.testb"), **task_options}


def variant_config(args: argparse.Namespace, name: str) -> ExperimentConfig:
    options = VARIANTS[name]
    training = {"epochs": args.epochs, "batch_size": 32, "learning_rate": 1e-4,
                "warmup_ratio": 0.06, "eval_strategy": "epoch", "progress_bar": False,
                "loss_balancing": options.get("loss_balancing", "static")}
    return ExperimentConfig.from_dict({
        "name": f"ablation-{name}",
        "tasks": [conll_task(args.datasets, options, args.subset)],
        "max_length": 128,
        "training": training,
        "logging": {"backend": "none", "log_every_n_steps": 100},
        "output_dir": str(args.runs / name),
        "cache_dir": str(_common.DEFAULT_CACHE),
    }).resolve()


def run_variant(args: argparse.Namespace, name: str) -> dict[str, Any]:
    config = variant_config(args, name)
    started = time.perf_counter()
    result = train_experiment(config)
    wall = time.perf_counter() - started
    test = evaluate_saved_model(Path(result.output_dir) / "best", config, split="test")
    scores = {head: {"validation": result.best["conll2003"][head][metric],
                     "test": test["conll2003"][head][metric]} for head, metric in HEADS}
    return {"variant": name, "options": VARIANTS[name], "scores": scores,
            "wall_seconds": round(wall, 1), "train_seconds": round(result.train_seconds, 1),
            "telemetry_seconds": round(result.telemetry_seconds, 2),
            "global_step": result.global_step, "best_step": result.best_step}


def markdown(results: list[dict[str, Any]], command: str, date: str) -> str:
    lines = [f"- command: `{command}`", f"- date: {date}", "",
             "| variant | " + " | ".join(f"{h} {m} val" for h, m in HEADS) + " | "
             + " | ".join(f"{h} test" for h, _ in HEADS) + " | train s |", "|---|"
             + "---:|" * (2 * len(HEADS) + 1)]
    for res in results:
        scores = res["scores"]
        lines.append(f"| {res['variant']} | "
                     + " | ".join(f"{scores[h]['validation']:.4f}" for h, _ in HEADS) + " | "
                     + " | ".join(f"{scores[h]['test']:.4f}" for h, _ in HEADS)
                     + f" | {res['train_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="base,shape,context,both",
                        help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--subset", type=int, help="a seeded subset of train sentences")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--datasets", type=Path, default=_common.DEFAULT_DATASETS)
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "ablation")
    parser.add_argument("--json", type=Path, help="write every result here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, datefmt="%H:%M:%S",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _common.check_datasets(args.datasets)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    command = "python benchmarks/ablation.py " + shlex.join(sys.argv[1:])
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results = []
    for name in names:
        results.append(run_variant(args, name))
        if args.json:  # after every variant: an interrupted run keeps what it measured
            args.json.write_text(json.dumps({"command": command, "date": date,
                                             "machine": _common.machine_info(),
                                             "results": results}, indent=2) + "\n")
    print(markdown(results, command, date))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
