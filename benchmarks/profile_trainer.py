"""Where a training step's time goes: our Trainer vs the bare loop, phase by phase (cProfile).

Same data, model and batches as ``throughput.py``. Runs our ``Trainer.train()`` and the bare
loop under ``cProfile`` and prints milliseconds per step for each phase (collate, forward,
backward, clip, optimizer, scheduler, meter, ...). cProfile slows Python-level calls, so
read the phases against each other, not as absolute throughput.

    python benchmarks/profile_trainer.py --model minilm --examples 256 [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # benchmarks/_common.py; puts the repo on sys.path
import throughput
import torch

from multitask_bert.tracking.base import NoOpLogger
from multitask_bert.training.trainer import Trainer

# phase -> (file suffix, function name): cumulative time of that function
PHASES = [
    ("collate", "data/dataset.py", "collate"),
    ("forward", "models/multitask.py", "forward"),
    ("backward", "torch/_tensor.py", "backward"),
    ("clip_grad_norm_", "nn/utils/clip_grad.py", "clip_grad_norm_"),
    ("optimizer.step", "optim/adam.py", "step"),
    ("zero_grad", "optim/optimizer.py", "zero_grad"),
    ("scheduler.step", "optim/lr_scheduler.py", "step"),
    ("loss.item (finite check)", "training/trainer.py", "_check_finite"),
    ("meter.add", "training/meter.py", "add"),
    ("_log_train (meter flush)", "training/trainer.py", "_log_train"),
    ("tqdm update", "tqdm/std.py", "update"),
    ("epoch_plan", "training/trainer.py", "epoch_plan"),
    ("_finish (save best/ + final checkpoint)", "training/trainer.py", "_finish"),
]


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    best = 0.0
    for (filename, _line, function), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        if function == name and filename.replace("\\", "/").endswith(suffix):
            best = max(best, ct)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", choices=list(_common.MODELS))
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pad-multiple", type=int, default=None,
                        help="training.pad_to_multiple_of (default: the library's)")
    parser.add_argument("--top", type=int, default=0, help="also print the top N functions")
    parser.add_argument("--datasets-dir", type=Path, default=_common.DEFAULT_DATASETS)
    parser.add_argument("--cache-dir", type=Path, default=_common.DEFAULT_CACHE)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ns = argparse.Namespace(examples=args.examples, batch_size=args.batch_size,
                            max_length=args.max_length, lr=5e-5, warmup_steps=3, steps=None,
                            seed=42, device="cpu", datasets_dir=args.datasets_dir,
                            cache_dir=args.cache_dir, pad_multiple=args.pad_multiple,
                            hf_pad_multiple=None)
    with _common.quiet_logs():
        ctx = throughput.prepare(args.model, ns)
        steps = ctx.total_steps
        throughput._plain_loop(ctx, ctx.plan[:3], ctx.train_sets, copy.deepcopy(ctx.model))

        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(ctx.config(Path(tmp), max_steps=None, log_every=steps),
                              copy.deepcopy(ctx.model), ctx.tokenizer, ctx.train_sets, {},
                              logger=NoOpLogger())
            ours = cProfile.Profile()
            start = time.perf_counter()
            ours.runcall(trainer.train)
            ours_s = time.perf_counter() - start
        bare = cProfile.Profile()
        model = copy.deepcopy(ctx.model)
        start = time.perf_counter()
        bare.runcall(throughput._plain_loop, ctx, ctx.plan, ctx.train_sets, model)
        bare_s = time.perf_counter() - start

    ours_stats, bare_stats = pstats.Stats(ours), pstats.Stats(bare)
    rows: list[dict[str, Any]] = []
    for phase, suffix, name in PHASES:
        o = cumulative(ours_stats, suffix, name)
        b = cumulative(bare_stats, suffix, name)
        rows.append({"phase": phase, "ours": 1000 * o / steps, "bare": 1000 * b / steps,
                     "diff": 1000 * (o - b) / steps})
    finish = cumulative(ours_stats, "training/trainer.py", "_finish")
    rows.append({"phase": "total, wall (ours: train() minus _finish)",
                 "ours": 1000 * (ours_s - finish) / steps, "bare": 1000 * bare_s / steps,
                 "diff": 1000 * (ours_s - finish - bare_s) / steps})
    print(f"\n### {args.model}: ms per step over {steps} steps (cProfile on), threads "
          f"{torch.get_num_threads()}, load {_common.load_1min()}\n")
    print(_common.format_table(rows, [("phase", "phase"), ("ours", "ours ms/step"),
                                      ("bare", "bare ms/step"), ("diff", "ours - bare")]))
    if args.top:
        print("\nours, by own time:")
        ours_stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
