"""Training throughput on the real length distribution: our Trainer vs the alternatives.

One run, per model (the packaged MiniLM, a tiny random BERT, optionally a BERT-base-sized
random BERT), on the same data (a seeded sample of N training examples of each of
CoNLL-2003, TREC and SST-2, tokenised by our cache code), the same initial weights, batch
size, learning rate, optimizer (AdamW, weight decay 0.01 except biases/LayerNorm, clipping
at 1.0, constant lr) and number of examples:

  ours   our round-robin ``Trainer`` through its public API (eval off, logging none,
         checkpoints off)
  hf     Hugging Face ``transformers.Trainer``, its best configuration for this job:
         length-grouped sampler (``group_by_length``; ``train_sampling_strategy=
         "group_by_length"`` in transformers 5), dynamic padding to a multiple of 8, one
         task at a time over the same examples, no evaluation/saving/reporting
  naive  a plain loop over our batches, each padded to ``--max-length``
  bare   a plain loop over exactly our batches: collate, forward, backward, clip, step;
         nothing else (the overhead floor)

Each contender warms up on a throw-away copy of the model (``--warmup-steps``), then trains a
fresh copy of the same initial weights over all N x 3 examples; the timed window covers
exactly those steps. Reports real (non-pad) tokens/s, padded tokens/s, pad share, samples/s,
peak memory and MFU, plus the ratios the issue sets targets for.

    python benchmarks/throughput.py --model both --examples 512 --json throughput.json
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import _common  # benchmarks/_common.py; puts the repo on sys.path
import torch

from multitask_bert.config import ExperimentConfig
from multitask_bert.data.cache import tokenize_and_cache
from multitask_bert.data.dataset import TaskDataset
from multitask_bert.models.multitask import MultiTaskModel, build_model, load_tokenizer
from multitask_bert.tracking.base import NoOpLogger
from multitask_bert.training.mfu import (
    gpu_peak_flops,
    measure_cpu_peak_flops,
    mfu,
    sequence_flops,
)
from multitask_bert.training.trainer import Trainer

CONTENDERS = ("ours", "hf", "naive", "bare")
TARGETS = {"ours_over_hf_min": 1.2, "ours_slower_than_bare_max_pct": 5.0,
           "pad_share_max": 0.10}


# -- counting tokens and FLOPs --------------------------------------------------------------
@dataclass
class Tally:
    """What one contender trained on: batches, examples, tokens and model FLOPs."""

    encoder_config: Any
    steps: int = 0
    samples: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    model_flops: float = 0.0
    """``Σ len·(6N + 12·L·len·d)`` over real tokens: the useful work (MFU)."""
    hardware_flops: float = 0.0
    """The same over padded rows: what the hardware computed, pads included."""

    def add(self, lengths: list[int], width: int) -> None:
        self.steps += 1
        self.samples += len(lengths)
        self.real_tokens += sum(lengths)
        self.padded_tokens += width * len(lengths)
        self.model_flops += sequence_flops(self.encoder_config, lengths)
        self.hardware_flops += sequence_flops(self.encoder_config, [width] * len(lengths))


def padded_width(lengths: list[int], multiple: int) -> int:
    return -(-max(lengths) // multiple) * multiple


def summarize(tally: Tally, seconds: float, memory: _common.PeakMemory, peak_flops: float,
              **extra: Any) -> dict[str, Any]:
    seconds = max(seconds, 1e-9)
    return {
        "steps": tally.steps,
        "samples": tally.samples,
        "real_tokens": tally.real_tokens,
        "padded_tokens": tally.padded_tokens,
        "seconds": round(seconds, 3),
        "real_tokens_per_s": tally.real_tokens / seconds,
        "padded_tokens_per_s": tally.padded_tokens / seconds,
        "pad_share": 1 - tally.real_tokens / tally.padded_tokens if tally.padded_tokens else 0.0,
        "samples_per_s": tally.samples / seconds,
        "steps_per_s": tally.steps / seconds,
        "peak_mem_mb": memory.peak_mb,
        "peak_mem_delta_mb": memory.delta_mb,
        "model_flops_per_s": tally.model_flops / seconds,
        "mfu": mfu(tally.model_flops / seconds, peak_flops),
        "hardware_flops_utilisation": mfu(tally.hardware_flops / seconds, peak_flops),
        **extra,
    }


# -- contenders -----------------------------------------------------------------------------
class _StepClock(NoOpLogger):
    """A tracking logger that notes when each logged step arrives (our Trainer logs the
    throughput meter at ``log_every_n_steps``)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[int, float, dict[str, float]]] = []

    def log_metrics(self, metrics: Any, step: int) -> None:
        self.events.append((step, time.perf_counter(), dict(metrics)))


def run_ours(ctx: Context) -> dict[str, Any]:
    """Our Trainer, public API only. Timed from ``train()`` to the meter's log at the last
    step (the final save of ``best/`` and the last checkpoint that ``train()`` always writes
    come after and are reported apart as ``train_call_s``)."""
    with tempfile.TemporaryDirectory(prefix="mtb-bench-") as tmp:
        warm = Trainer(ctx.config(Path(tmp, "warm"), max_steps=ctx.warmup_steps),
                       copy.deepcopy(ctx.model), ctx.tokenizer, ctx.train_sets, {},
                       logger=NoOpLogger())
        warm.train()
        warm.close()
        del warm
        with _common.PeakMemory(ctx.device) as memory:
            clock = _StepClock()
            trainer = Trainer(ctx.config(Path(tmp, "timed"), max_steps=ctx.steps,
                                         log_every=ctx.total_steps),
                              copy.deepcopy(ctx.model), ctx.tokenizer, ctx.train_sets, {},
                              logger=clock)
            assert trainer.total_steps == ctx.total_steps, (trainer.total_steps, ctx.total_steps)
            start = time.perf_counter()
            trainer.train()
            train_call = time.perf_counter() - start
            trainer.close()
        last_step, last_time, stats = clock.events[-1]
        assert last_step == ctx.total_steps, clock.events
    tally = ctx.tally_plan(ctx.plan)
    return summarize(tally, last_time - start, memory, ctx.peak_flops,
                     optimizer=f"AdamW {ctx.optimizer_flags}",
                     pad_to_multiple_of=ctx.pad_multiple,
                     train_call_s=round(train_call, 3),
                     self_reported={k: stats[k] for k in ("train/tokens_per_s",
                                                          "train/padded_tokens_per_s",
                                                          "train/samples_per_s",
                                                          "train/pad_ratio") if k in stats})


def _optimizer(model: torch.nn.Module, ctx: Context) -> torch.optim.Optimizer:
    """AdamW as our Trainer builds it: no weight decay on 1-D parameters, and the same
    implementation flags (``fused``/``foreach``) as the Trainer's own optimizer."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": ctx.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=ctx.lr, **ctx.optimizer_flags)


def _plain_loop(ctx: Context, plan: list[tuple[str, list[int]]],
                datasets: dict[str, TaskDataset], model: torch.nn.Module) -> None:
    """collate -> (copy) -> forward/backward -> clip -> step. Nothing else."""
    device = torch.device(ctx.device)
    optimizer = _optimizer(model, ctx)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=ctx.device == "cuda")
    model.train()
    for task, indices in plan:
        batch = datasets[task].collate(indices)
        if device.type == "cuda":
            batch = batch.pin_memory().to(device, non_blocking=True)
        with autocast:
            out = model(batch.input_ids, batch.attention_mask, batch.labels, task_id=task,
                        token_type_ids=batch.token_type_ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), ctx.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_plain(ctx: Context, pad_to_max: bool) -> dict[str, Any]:
    """bare (our batches, our dynamic padding) or naive (the same batches padded to
    ``max_length``)."""
    datasets = ctx.train_sets
    if pad_to_max:  # collate rounds the width up to a multiple of max_length: max_length
        datasets = {n: replace(d, pad_to_multiple_of=ctx.max_length)
                    for n, d in datasets.items()}
    _plain_loop(ctx, ctx.plan[: ctx.warmup_steps], datasets, copy.deepcopy(ctx.model).to(
        ctx.device))
    with _common.PeakMemory(ctx.device) as memory:
        model = copy.deepcopy(ctx.model).to(ctx.device)
        torch.manual_seed(ctx.seed)
        start = time.perf_counter()
        _plain_loop(ctx, ctx.plan, datasets, model)
        seconds = time.perf_counter() - start
    tally = ctx.tally_plan(ctx.plan, multiple=ctx.max_length if pad_to_max else None)
    return summarize(tally, seconds, memory, ctx.peak_flops,
                     optimizer=f"AdamW {ctx.optimizer_flags} (as ours)",
                     pad_to_multiple_of=ctx.max_length if pad_to_max else ctx.pad_multiple)


class _SingleTask(torch.nn.Module):
    """Our MultiTaskModel seen by ``transformers.Trainer`` as a one-task model: flat
    ``label__<head>`` inputs in, ``{"loss"}`` out."""

    def __init__(self, model: MultiTaskModel, task: str) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, input_ids, attention_mask, token_type_ids=None, **kwargs):
        labels = {k.removeprefix("label__"): v for k, v in kwargs.items()
                  if k.startswith("label__")}
        out = self.model(input_ids, attention_mask, labels, task_id=self.task,
                         token_type_ids=token_type_ids)
        return {"loss": out.loss}


class _HFCollator:
    """``DataCollatorWithPadding(pad_to_multiple_of=8)`` for the inputs; tag columns padded
    with -100 to the same width (what ``DataCollatorForTokenClassification`` does for its one
    ``labels`` column, for each of our tagging heads). Counts tokens as it goes."""

    def __init__(self, tokenizer: Any, tag_columns: list[str], tally: Tally,
                 pad_to_multiple_of: int | None = 8) -> None:
        from transformers import DataCollatorWithPadding

        self.pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of,
                                           return_tensors="pt")
        self.tag_columns, self.tally = tag_columns, tally

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        features = [dict(f) for f in features]
        tags = {c: [f.pop(c) for f in features] for c in self.tag_columns}
        for f in features:
            f.pop("length", None)
        batch = self.pad(features)
        width = batch["input_ids"].shape[1]
        for column, rows in tags.items():
            batch[column] = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
        self.tally.add([len(f["input_ids"]) for f in features], width)
        return batch


def _hf_dataset(dataset: TaskDataset) -> Any:
    import datasets

    keep = ["input_ids", "token_type_ids", "length",
            *[c for c in dataset.columns if c.startswith("label__")]]
    return datasets.Dataset.from_dict({c: dataset.columns[c] for c in keep
                                       if c in dataset.columns})


def run_hf(ctx: Context) -> dict[str, Any]:
    """``transformers.Trainer``, one task after the other over the same examples."""
    from transformers import PrinterCallback, TrainerCallback, TrainingArguments
    from transformers import Trainer as HFTrainer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if ctx.device == "cuda":
                torch.cuda.synchronize()
            self.end = time.perf_counter()

    def train(model: MultiTaskModel, task: str, out: Path, max_steps: int, tally: Tally
              ) -> tuple[float, float]:
        dataset = ctx.train_sets[task]
        tag_columns = [f"label__{h.name}" for h in dataset.task.heads if h.type == "tagging"]
        args = TrainingArguments(
            output_dir=str(out), per_device_train_batch_size=ctx.batch_size,
            learning_rate=ctx.lr, weight_decay=ctx.weight_decay, max_grad_norm=ctx.max_grad_norm,
            lr_scheduler_type="constant", warmup_steps=0, num_train_epochs=1,
            max_steps=max_steps,
            train_sampling_strategy="group_by_length", length_column_name="length",
            eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[],
            dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
            seed=ctx.seed, use_cpu=ctx.device == "cpu", bf16=ctx.device == "cuda",
            dataloader_pin_memory=ctx.device == "cuda",
        )
        clock = Clock()
        trainer = HFTrainer(model=_SingleTask(model, task), args=args,
                            train_dataset=_hf_dataset(dataset),
                            data_collator=_HFCollator(ctx.tokenizer, tag_columns, tally,
                                                      ctx.hf_pad_multiple),
                            callbacks=[clock])
        trainer.remove_callback(PrinterCallback)  # prints the final metrics dict
        start = time.perf_counter()
        trainer.train()
        return clock.end - clock.begin, time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="mtb-bench-hf-") as tmp:
        first = next(iter(ctx.train_sets))
        train(copy.deepcopy(ctx.model), first, Path(tmp, "warm"), ctx.warmup_steps,
              Tally(ctx.encoder_config))
        _common.release_memory()
        tally, seconds, train_calls = Tally(ctx.encoder_config), 0.0, 0.0
        with _common.PeakMemory(ctx.device) as memory:
            model = copy.deepcopy(ctx.model)
            torch.manual_seed(ctx.seed)
            for task, steps in ctx.hf_steps().items():
                if not steps:
                    continue
                timed, call = train(model, task, Path(tmp, task), steps, tally)
                seconds, train_calls = seconds + timed, train_calls + call
    return summarize(tally, seconds, memory, ctx.peak_flops, train_call_s=round(train_calls, 3),
                     optimizer=f"transformers default ({args_optim()})",
                     pad_to_multiple_of=ctx.hf_pad_multiple)


def args_optim() -> str:
    from transformers import TrainingArguments

    return str(TrainingArguments(output_dir=tempfile.gettempdir(), report_to=[]).optim.value)


# -- the run --------------------------------------------------------------------------------
@dataclass
class Context:
    """Everything one model's contenders share."""

    name: str
    raw_config: dict[str, Any]
    model: MultiTaskModel
    tokenizer: Any
    train_sets: dict[str, TaskDataset]
    device: str
    batch_size: int
    max_length: int
    lr: float
    warmup_steps: int
    steps: int | None
    seed: int
    peak_flops: float = 0.0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    hf_pad_multiple: int | None = 8
    plan: list[tuple[str, list[int]]] | None = None
    total_steps: int = 0
    optimizer_flags: dict[str, Any] | None = None
    """``fused``/``foreach`` of our Trainer's AdamW (the plain loops copy them)."""

    @property
    def pad_multiple(self) -> int:
        return next(iter(self.train_sets.values())).pad_to_multiple_of

    @property
    def encoder_config(self) -> Any:
        return self.model.encoder.config

    def config(self, output_dir: Path, max_steps: int | None, log_every: int = 10
               ) -> ExperimentConfig:
        raw = copy.deepcopy(self.raw_config)
        raw["training"]["max_steps"] = max_steps
        raw["logging"]["log_every_n_steps"] = max(1, log_every)
        raw["output_dir"] = str(output_dir)
        return ExperimentConfig.from_dict(raw)

    def tally_plan(self, plan: list[tuple[str, list[int]]], multiple: int | None = None
                   ) -> Tally:
        tally = Tally(self.encoder_config)
        for task, indices in plan:
            dataset = self.train_sets[task]
            lengths = [dataset.lengths[i] for i in indices]
            tally.add(lengths, padded_width(lengths, multiple or dataset.pad_to_multiple_of))
        return tally

    def hf_steps(self) -> dict[str, int]:
        """Per task, the steps ours takes on it (all of its batches unless ``--steps``)."""
        counts = dict.fromkeys(self.train_sets, 0)
        for task, _ in self.plan:
            counts[task] += 1
        return counts


def prepare(model_name: str, args: argparse.Namespace) -> Context:
    tasks = _common.benchmark_tasks(args.datasets_dir, args.examples)
    raw = {
        "name": f"throughput-{model_name}",
        "encoder": _common.MODELS[model_name],
        "tasks": tasks,
        "max_length": args.max_length,
        "training": {"epochs": 1, "batch_size": args.batch_size, "learning_rate": args.lr,
                     "weight_decay": 0.01, "warmup_steps": 0, "scheduler": "constant",
                     "max_grad_norm": 1.0, "eval_strategy": "no",
                     "checkpoint_every_n_steps": None, "progress_bar": False, "resume": False,
                     "seed": args.seed, "device": args.device, "group_by_length": True},
        "logging": {"backend": "none"},
        "cache_dir": str(args.cache_dir),
    }
    if args.pad_multiple:  # else the library's default
        raw["training"]["pad_to_multiple_of"] = args.pad_multiple
    if getattr(args, "compile", False):
        raw["training"]["compile"] = True
    config = ExperimentConfig.from_dict(raw)
    tokenizer = load_tokenizer(config.encoder.resolve_path())
    pad = tokenizer.pad_token_id or 0
    train_sets, vocab = {}, {}
    for task in config.tasks:
        cached = tokenize_and_cache(task, tokenizer, max_length=args.max_length,
                                    cache_dir=config.cache_path, seed=args.seed,
                                    splits=["train"])
        vocab[task.name] = cached.label_vocab
        train_sets[task.name] = TaskDataset.from_parquet(
            cached.splits["train"], task, cached.label_vocab, pad_token_id=pad,
            pad_to_multiple_of=config.training.pad_multiple())
    model = build_model(config.encoder, config.tasks, vocab, seed=args.seed)
    hf_multiple = args.hf_pad_multiple or config.training.pad_multiple()
    ctx = Context(model_name, raw, model, tokenizer, train_sets, args.device, args.batch_size,
                  args.max_length, args.lr, args.warmup_steps, args.steps, args.seed,
                  hf_pad_multiple=hf_multiple if hf_multiple > 1 else None)
    # the plan every contender trains on: our Trainer's own (public) epoch plan
    with tempfile.TemporaryDirectory() as tmp:
        probe = Trainer(ctx.config(Path(tmp), max_steps=args.steps), copy.deepcopy(model),
                        tokenizer, train_sets, {}, logger=NoOpLogger())
        ctx.total_steps = probe.total_steps
        ctx.plan = probe.epoch_plan(0)[: probe.total_steps]
        ctx.optimizer_flags = {k: probe.optimizer.defaults.get(k)
                               for k in ("fused", "foreach")}
        probe.close()
    return ctx


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ours = results.get("ours")
    if not ours:
        return out
    out["pad_share_ours"] = ours["pad_share"]
    out["pad_share_target_met"] = ours["pad_share"] <= TARGETS["pad_share_max"]
    if "hf" in results:
        out["ours_over_hf_real_tokens"] = (ours["real_tokens_per_s"]
                                           / results["hf"]["real_tokens_per_s"])
        out["ours_over_hf_target_met"] = out["ours_over_hf_real_tokens"] >= TARGETS[
            "ours_over_hf_min"]
    if "bare" in results:
        slower = 100 * (1 - ours["real_tokens_per_s"] / results["bare"]["real_tokens_per_s"])
        out["ours_slower_than_bare_pct"] = slower
        out["ours_vs_bare_target_met"] = slower <= TARGETS["ours_slower_than_bare_max_pct"]
    if "naive" in results:
        out["ours_over_naive_real_tokens"] = (ours["real_tokens_per_s"]
                                              / results["naive"]["real_tokens_per_s"])
    return out


COLUMNS = [("contender", "contender"), ("steps", "steps"), ("samples", "samples"),
           ("seconds", "s"), ("real_tokens_per_s", "real tok/s"),
           ("padded_tokens_per_s", "padded tok/s"), ("pad_share", "pad share"),
           ("samples_per_s", "samples/s"), ("peak_mem_mb", "peak MB"),
           ("peak_mem_delta_mb", "+MB"), ("mfu_pct", "MFU %"), ("hfu_pct", "HFU %")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="both",
                        choices=["minilm", "tiny", "bert-base", "both", "all"],
                        help="both = minilm + tiny; all = + bert-base (random, 110M)")
    parser.add_argument("--examples", type=int, default=1024,
                        help="training examples per task (a seeded sample)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--warmup-steps", type=int, default=3,
                        help="untimed steps on a throw-away model copy, per contender")
    parser.add_argument("--steps", type=int, default=None,
                        help="cap on timed optimizer steps (default: all N x 3 examples)")
    parser.add_argument("--pad-multiple", type=int, default=None,
                        help="ours (and bare): training.pad_to_multiple_of (default: the "
                        "library's default)")
    parser.add_argument("--hf-pad-multiple", type=int, default=None,
                        help="HF collator's pad_to_multiple_of (1: none; default: the same as "
                        "ours, so both pad alike)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run every contender this many times (order rotated) and keep "
                        "each one's fastest run: steadier on a shared machine")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help=f"comma-separated subset of {','.join(CONTENDERS)}")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--compile", action="store_true",
                        help="ours with training.compile=true (torch.compile, dynamic shapes)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--datasets-dir", type=Path, default=_common.DEFAULT_DATASETS)
    parser.add_argument("--cache-dir", type=Path, default=_common.DEFAULT_CACHE)
    parser.add_argument("--json", dest="json_path", default=None, help="write results here")
    parser.add_argument("--results-md", default=None,
                        help="append a section to this Markdown file (benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    _common.check_datasets(args.datasets_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}; choose from {CONTENDERS}")
    names = {"both": ["minilm", "tiny"], "all": ["minilm", "tiny", "bert-base"]}.get(
        args.model, [args.model])

    machine = _common.machine_info()
    print(f"machine: {machine['nproc']} cpus ({machine['cpu']}), torch {machine['torch']}, "
          f"{machine['torch_threads']} threads, gpu {machine['gpu']}, "
          f"load {machine['load_avg_1_5_15']}")
    report: dict[str, Any] = {"benchmark": "throughput", "command": " ".join(sys.argv),
                              "machine": machine, "args": {k: str(v) if isinstance(v, Path)
                                                           else v for k, v in vars(args).items()},
                              "targets": TARGETS, "models": {}}
    texts = []
    with _common.quiet_logs():
        for name in names:
            report["models"][name] = bench_model(name, args, contenders)
            texts.append(model_markdown(name, report["models"][name]))
            print("\n" + texts[-1])
    report["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    _common.write_json(args.json_path, report)
    loads = ", ".join(f"{n}: {m['load_1min_start']} at start, "
                      f"{max(r['load_1min_after'] for r in m['contenders'].values())} max after "
                      "a contender" for n, m in report["models"].items())
    _common.append_markdown(args.results_md, _common.results_section(
        f"Throughput ({', '.join(names)}; {args.examples} examples/task, batch "
        f"{args.batch_size})", machine, loads, "\n".join(texts)))
    return 0


def bench_model(name: str, args: argparse.Namespace, contenders: list[str]) -> dict[str, Any]:
    ctx = prepare(name, args)
    if args.device == "cuda":
        peak = gpu_peak_flops(torch.cuda.get_device_name()) or float("nan")
        peak_source = f"datasheet dense bf16 ({torch.cuda.get_device_name()})"
    else:
        peak = measure_cpu_peak_flops(seconds=2.0)
        peak_source = f"fp32 1024x1024 matmul, measured, {torch.get_num_threads()} threads"
    ctx.peak_flops = peak
    load_start = _common.load_1min()
    results: dict[str, dict[str, Any]] = {}
    runners = {"ours": lambda: run_ours(ctx), "hf": lambda: run_hf(ctx),
               "naive": lambda: run_plain(ctx, pad_to_max=True),
               "bare": lambda: run_plain(ctx, pad_to_max=False)}
    history: dict[str, list[float]] = {c: [] for c in contenders}
    for repeat in range(args.repeats):
        shift = repeat % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            result = runners[contender]()
            result["load_1min_after"] = _common.load_1min()
            history[contender].append(round(result["real_tokens_per_s"], 1))
            best = results.get(contender)
            if best is None or result["real_tokens_per_s"] > best["real_tokens_per_s"]:
                results[contender] = result
            _common.release_memory()
    for contender in contenders:  # table order
        results[contender] = {**results.pop(contender),
                              "real_tokens_per_s_all_runs": history[contender]}
    if args.device == "cpu":  # the peak again: a busy machine moves it
        peak_end = measure_cpu_peak_flops(seconds=2.0)
        if peak_end > peak:  # MFU against the higher of the two
            for result in results.values():
                result["mfu"] *= peak / peak_end
                result["hardware_flops_utilisation"] *= peak / peak_end
            ctx.peak_flops = peak_end
    else:
        peak_end = peak
    summary = ratios(results)
    encoder = ctx.encoder_config
    out = {
        "encoder": {"layers": encoder.num_hidden_layers, "hidden": encoder.hidden_size,
                    "intermediate": encoder.intermediate_size,
                    "params": sum(p.numel() for p in ctx.model.encoder.parameters()),
                    "random_init": bool(_common.MODELS[name].get("random_init"))},
        "examples_per_task": {t: len(d) for t, d in ctx.train_sets.items()},
        "total_steps": ctx.total_steps,
        "peak_flops": ctx.peak_flops,
        "peak_flops_start_end": [peak, peak_end],
        "peak_source": peak_source,
        "load_1min_start": load_start,
        "contenders": results,
        "ratios": summary,
    }
    return out


def model_markdown(name: str, out: dict[str, Any]) -> str:
    """One model's heading, table and ratios (Markdown)."""
    rows = []
    for contender, result in out["contenders"].items():
        rows.append({**result, "contender": contender, "mfu_pct": 100 * result["mfu"],
                     "hfu_pct": 100 * result["hardware_flops_utilisation"]})
    enc = out["encoder"]
    text = [f"### {name}: {enc['layers']} layers x {enc['hidden']} hidden, "
            f"{enc['params'] / 1e6:.1f} M encoder params; examples/task "
            f"{out['examples_per_task']}; {out['total_steps']} steps; peak "
            f"{out['peak_flops'] / 1e9:.0f} GFLOP/s ({out['peak_source']}); "
            f"load {out['load_1min_start']}", "", _common.format_table(rows, COLUMNS), ""]
    r = out["ratios"]
    lines = []
    if "ours_over_hf_real_tokens" in r:
        lines.append(f"ours / HF Trainer (real tok/s): {r['ours_over_hf_real_tokens']:.2f}x "
                     f"(target >= {TARGETS['ours_over_hf_min']}x: "
                     f"{'met' if r['ours_over_hf_target_met'] else 'NOT met'})")
    if "ours_slower_than_bare_pct" in r:
        slower = r["ours_slower_than_bare_pct"]
        lines.append(f"ours vs bare loop: {abs(slower):.1f} % "
                     f"{'slower' if slower >= 0 else 'faster'} "
                     f"(target <= {TARGETS['ours_slower_than_bare_max_pct']} %: "
                     f"{'met' if r['ours_vs_bare_target_met'] else 'NOT met'})")
    if "pad_share_ours" in r:
        lines.append(f"pad share (ours): {100 * r['pad_share_ours']:.1f} % (target <= "
                     f"{100 * TARGETS['pad_share_max']:.0f} %: "
                     f"{'met' if r['pad_share_target_met'] else 'NOT met'})")
    if "ours_over_naive_real_tokens" in r:
        lines.append(f"ours / naive pad-to-max (real tok/s): "
                     f"{r['ours_over_naive_real_tokens']:.2f}x")
    best_of = {c: v["real_tokens_per_s_all_runs"] for c, v in out["contenders"].items()
               if len(v["real_tokens_per_s_all_runs"]) > 1}
    if best_of:
        lines.append(f"fastest of each contender's runs; real tok/s of every run: {best_of}")
    if math.isnan(out["peak_flops"]):
        lines.append("MFU: n/a (GPU not in the datasheet table)")
    return "\n".join(text + [f"- {line}" for line in lines]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
