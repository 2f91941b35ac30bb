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
  ours_padded  our Trainer with ``training.unpadded=false`` (padded batches): what the
         unpadded path gains, where ``ours`` runs it (CUDA by default, ``--unpadded true``)

Each contender warms up on a throw-away copy of the model (``--warmup-steps``), then trains a
fresh copy of the same initial weights over all N x 3 examples; the timed window covers
exactly those steps. Reports real (non-pad) tokens/s, padded tokens/s, pad share, samples/s,
peak memory and MFU, plus the ratios the issue sets targets for.

    python benchmarks/throughput.py --model both --examples 512 --json throughput.json
    python benchmarks/throughput.py --model minilm-random,bert-base --device cuda \
        --batch-size 512 --examples 16384 --profile missed --json gpu.json
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import _common  # benchmarks/_common.py; puts the repo on sys.path
import torch

from multitask_bert.config import ExperimentConfig
from multitask_bert.data.cache import tokenize_and_cache
from multitask_bert.data.dataset import TaskDataset
from multitask_bert.models.multitask import MultiTaskModel, build_model, load_tokenizer
from multitask_bert.models.packing import attention_backends
from multitask_bert.tracking.base import NoOpLogger
from multitask_bert.training.mfu import (
    gpu_peak_flops,
    measure_cpu_peak_flops,
    mfu,
    sequence_flops,
)
from multitask_bert.training.trainer import Trainer

CONTENDERS = ("ours", "ours_padded", "hf", "naive", "bare")
DEFAULT_CONTENDERS = {"cpu": ("ours", "hf", "naive", "bare"),
                      "cuda": ("ours", "ours_padded", "hf", "naive", "bare")}
TARGETS_BY_DEVICE: dict[str, dict[str, Any]] = {
    # the CPU issue's targets (2-core machines, padded batches)
    "cpu": {"ours_over_hf_min": 1.2, "ours_slower_than_bare_max_pct": 5.0,
            "pad_share_max": 0.10},
    # issue 15 (GPU, bf16): unpadded batches, and MFU on the BERT-base-size encoder
    "cuda": {"ours_over_hf_min": 1.3, "ours_slower_than_bare_max_pct": 5.0,
             "pad_share_max": 0.02, "mfu_min": 0.40, "mfu_models": ["bert-base"]},
}
TARGETS = TARGETS_BY_DEVICE["cpu"]


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

    def add(self, lengths: list[int], width: int | None) -> None:
        """One batch of rows of ``lengths`` tokens, padded to ``width`` (None: packed, no
        padding; attention within each row)."""
        widths = list(lengths) if width is None else [width] * len(lengths)
        self.steps += 1
        self.samples += len(lengths)
        self.real_tokens += sum(lengths)
        self.padded_tokens += sum(widths)
        self.model_flops += sequence_flops(self.encoder_config, lengths)
        self.hardware_flops += sequence_flops(self.encoder_config, widths)


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


def run_ours(ctx: Context, padded: bool = False) -> dict[str, Any]:
    """Our Trainer, public API only (``padded``: with ``training.unpadded=false``). Timed
    from ``train()`` to the meter's log at the last step (the final save of ``best/`` and the
    last checkpoint that ``train()`` always writes come after and are reported apart as
    ``train_call_s``)."""
    unpadded = False if padded else ctx.unpadded_setting
    with tempfile.TemporaryDirectory(prefix="mtb-bench-") as tmp:
        warm = Trainer(ctx.config(Path(tmp, "warm"), max_steps=ctx.warmup_steps,
                                  unpadded=unpadded),
                       copy.deepcopy(ctx.model), ctx.tokenizer, ctx.train_sets, {},
                       logger=NoOpLogger())
        warm.train()
        warm.close()
        del warm
        with _common.PeakMemory(ctx.device) as memory:
            clock = _StepClock()
            trainer = Trainer(ctx.config(Path(tmp, "timed"), max_steps=ctx.steps,
                                         log_every=ctx.total_steps, unpadded=unpadded),
                              copy.deepcopy(ctx.model), ctx.tokenizer, ctx.train_sets, {},
                              logger=clock)
            assert trainer.total_steps == ctx.total_steps, (trainer.total_steps, ctx.total_steps)
            packed = trainer.unpadded
            start = time.perf_counter()
            trainer.train()
            train_call = time.perf_counter() - start
            trainer.close()
        last_step, last_time, stats = clock.events[-1]
        assert last_step == ctx.total_steps, clock.events
    tally = ctx.tally_plan(ctx.plan, packed=packed)
    return summarize(tally, last_time - start, memory, ctx.peak_flops,
                     optimizer=f"AdamW {ctx.optimizer_flags}",
                     pad_to_multiple_of=None if packed else ctx.pad_multiple,
                     unpadded=packed, train_call_s=round(train_call, 3),
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
                datasets: dict[str, TaskDataset], model: torch.nn.Module,
                packed: bool = False) -> None:
    """collate -> (copy) -> forward/backward -> clip -> step. Nothing else. ``packed``:
    the batches packed as our Trainer's unpadded path makes them."""
    device = torch.device(ctx.device)
    optimizer = _optimizer(model, ctx)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=ctx.device == "cuda")
    model.train()
    for task, indices in plan:
        batch = datasets[task].collate(indices, packed=packed)
        if device.type == "cuda":
            batch = batch.pin_memory().to(device, non_blocking=True)
        with autocast:
            out = model(batch.input_ids, batch.attention_mask, batch.labels, task_id=task,
                        token_type_ids=batch.token_type_ids, packing=batch.packing)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), ctx.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_plain(ctx: Context, pad_to_max: bool) -> dict[str, Any]:
    """bare (exactly our batches: packed where ours runs unpadded, else dynamically padded)
    or naive (the same batches padded to ``max_length``)."""
    datasets = ctx.train_sets
    packed = ctx.unpadded and not pad_to_max
    if pad_to_max:  # collate rounds the width up to a multiple of max_length: max_length
        datasets = {n: replace(d, pad_to_multiple_of=ctx.max_length)
                    for n, d in datasets.items()}
    _plain_loop(ctx, ctx.plan[: ctx.warmup_steps], datasets, copy.deepcopy(ctx.model).to(
        ctx.device), packed)
    with _common.PeakMemory(ctx.device) as memory:
        model = copy.deepcopy(ctx.model).to(ctx.device)
        torch.manual_seed(ctx.seed)
        start = time.perf_counter()
        _plain_loop(ctx, ctx.plan, datasets, model, packed)
        seconds = time.perf_counter() - start
    tally = ctx.tally_plan(ctx.plan, multiple=ctx.max_length if pad_to_max else None,
                           packed=packed)
    return summarize(tally, seconds, memory, ctx.peak_flops,
                     optimizer=f"AdamW {ctx.optimizer_flags} (as ours)", unpadded=packed,
                     pad_to_multiple_of=(ctx.max_length if pad_to_max else
                                         None if packed else ctx.pad_multiple))


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


class _Rows(torch.utils.data.Dataset):
    """The same columns as a list of rows, where ``datasets`` cannot be imported (a GPU
    machine with its own packages): ``group_by_length`` then reads each row's ``input_ids``
    length instead of the ``length`` column (the same lengths, found once at set-up)."""

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self.rows = [dict(zip(columns, values, strict=True))
                     for values in zip(*columns.values(), strict=True)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def _hf_dataset(dataset: TaskDataset) -> tuple[Any, str]:
    keep = ["input_ids", "token_type_ids", "length",
            *[c for c in dataset.columns if c.startswith("label__")]]
    columns = {c: dataset.columns[c] for c in keep if c in dataset.columns}
    try:
        import datasets
    except Exception:  # not installed, or built against other packages than these
        return _Rows(columns), "list of rows (datasets not importable)"
    return datasets.Dataset.from_dict(columns), "datasets.Dataset"


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
            if state.global_step >= state.max_steps and ctx.device == "cuda":
                torch.cuda.synchronize()  # the last step: wait for the GPU to finish
            self.end = time.perf_counter()

    kind: list[str] = []

    def train(model: MultiTaskModel, task: str, out: Path, max_steps: int, tally: Tally
              ) -> tuple[float, float]:
        dataset = ctx.train_sets[task]
        train_dataset, what = _hf_dataset(dataset)
        kind.append(what)
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
            # the fused AdamW on CUDA (the configuration); the default elsewhere
            **({"optim": "adamw_torch_fused"} if ctx.device == "cuda" else {}),
        )
        clock = Clock()
        trainer = HFTrainer(model=_SingleTask(model, task), args=args,
                            train_dataset=train_dataset,
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
    optim = "adamw_torch_fused" if ctx.device == "cuda" else f"default, {args_optim()}"
    return summarize(tally, seconds, memory, ctx.peak_flops, train_call_s=round(train_calls, 3),
                     optimizer=f"transformers {optim}", dataset=kind[-1],
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
    unpadded_setting: bool | str = "auto"
    """``training.unpadded`` for ours (``--unpadded``)."""
    unpadded: bool = False
    """Whether ours runs packed batches with that setting here (bare then does too)."""
    attention: str = ""
    """The packed-attention kernels, where ours runs packed."""

    @property
    def pad_multiple(self) -> int:
        return next(iter(self.train_sets.values())).pad_to_multiple_of

    @property
    def encoder_config(self) -> Any:
        return self.model.encoder.config

    def config(self, output_dir: Path, max_steps: int | None, log_every: int = 10,
               unpadded: bool | str | None = None) -> ExperimentConfig:
        raw = copy.deepcopy(self.raw_config)
        raw["training"]["max_steps"] = max_steps
        raw["training"]["unpadded"] = self.unpadded_setting if unpadded is None else unpadded
        raw["logging"]["log_every_n_steps"] = max(1, log_every)
        raw["output_dir"] = str(output_dir)
        return ExperimentConfig.from_dict(raw)

    def tally_plan(self, plan: list[tuple[str, list[int]]], multiple: int | None = None,
                   packed: bool = False) -> Tally:
        tally = Tally(self.encoder_config)
        for task, indices in plan:
            dataset = self.train_sets[task]
            lengths = [dataset.lengths[i] for i in indices]
            tally.add(lengths, None if packed else
                      padded_width(lengths, multiple or dataset.pad_to_multiple_of))
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
                  hf_pad_multiple=hf_multiple if hf_multiple > 1 else None,
                  unpadded_setting=args.unpadded)
    # the plan every contender trains on: our Trainer's own (public) epoch plan
    with tempfile.TemporaryDirectory() as tmp:
        probe = Trainer(ctx.config(Path(tmp), max_steps=args.steps), copy.deepcopy(model),
                        tokenizer, train_sets, {}, logger=NoOpLogger())
        ctx.total_steps = probe.total_steps
        ctx.plan = probe.epoch_plan(0)[: probe.total_steps]
        ctx.optimizer_flags = {k: probe.optimizer.defaults.get(k)
                               for k in ("fused", "foreach")}
        ctx.unpadded = probe.unpadded
        if probe.unpadded:
            ctx.attention = attention_backends(probe.device).describe()
        probe.close()
    return ctx


def ratios(results: dict[str, dict[str, Any]], targets: dict[str, Any] = TARGETS,
           model: str = "") -> dict[str, Any]:
    """The figures the targets are about, and whether each target is met."""
    out: dict[str, Any] = {}
    ours = results.get("ours")
    if not ours:
        return out
    out["pad_share_ours"] = ours["pad_share"]
    out["pad_share_target_met"] = ours["pad_share"] <= targets["pad_share_max"]
    if "hf" in results:
        out["ours_over_hf_real_tokens"] = (ours["real_tokens_per_s"]
                                           / results["hf"]["real_tokens_per_s"])
        out["ours_over_hf_target_met"] = out["ours_over_hf_real_tokens"] >= targets[
            "ours_over_hf_min"]
    if "bare" in results:
        slower = 100 * (1 - ours["real_tokens_per_s"] / results["bare"]["real_tokens_per_s"])
        out["ours_slower_than_bare_pct"] = slower
        out["ours_vs_bare_target_met"] = slower <= targets["ours_slower_than_bare_max_pct"]
    if "naive" in results:
        out["ours_over_naive_real_tokens"] = (ours["real_tokens_per_s"]
                                              / results["naive"]["real_tokens_per_s"])
    if "ours_padded" in results:
        out["ours_over_ours_padded_real_tokens"] = (
            ours["real_tokens_per_s"] / results["ours_padded"]["real_tokens_per_s"])
    out["mfu_ours"] = ours["mfu"]
    if "mfu_min" in targets and model in targets.get("mfu_models", []):
        out["mfu_target_met"] = bool(ours["mfu"] >= targets["mfu_min"])
    return out


def missed_targets(summary: dict[str, Any]) -> list[str]:
    """The names of the targets ``ratios`` found not met."""
    return [key.removesuffix("_target_met") for key, met in summary.items()
            if key.endswith("_target_met") and met is False]


# -- where the time goes (torch.profiler) -------------------------------------------------------
def profile_ours(ctx: Context, steps: int, top: int = 15) -> dict[str, Any]:
    """``steps`` optimizer steps of ours (after its warm-up) under ``torch.profiler``: the
    operators and kernels with the most self time (device time on CUDA, CPU time on CPU),
    each with its share of the total."""
    from torch.profiler import ProfilerActivity, profile

    cuda = ctx.device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with tempfile.TemporaryDirectory(prefix="mtb-profile-") as tmp:
        warm = Trainer(ctx.config(Path(tmp, "warm"), max_steps=ctx.warmup_steps),
                       copy.deepcopy(ctx.model), ctx.tokenizer, ctx.train_sets, {},
                       logger=NoOpLogger())
        warm.train()
        warm.close()
        trainer = Trainer(ctx.config(Path(tmp, "profiled"), max_steps=steps,
                                     log_every=steps),
                          copy.deepcopy(ctx.model), ctx.tokenizer, ctx.train_sets, {},
                          logger=NoOpLogger())
        with profile(activities=activities) as prof:
            trainer.train()
            if cuda:
                torch.cuda.synchronize()
        trainer.close()
    events = prof.key_averages()

    def self_us(event: Any) -> float:
        if cuda:  # torch >= 2.4 names it device time; older torch, cuda time
            return float(getattr(event, "self_device_time_total",
                                 getattr(event, "self_cuda_time_total", 0.0)))
        return float(event.self_cpu_time_total)

    total = sum(self_us(e) for e in events) or 1.0
    ranked = sorted(events, key=self_us, reverse=True)[:top]
    return {
        "steps": trainer.total_steps,
        "unpadded": trainer.unpadded,
        "clock": "device (CUDA kernels)" if cuda else "CPU",
        "total_ms": round(total / 1000, 3),
        "top": [{"name": e.key[:120], "calls": int(e.count),
                 "self_ms": round(self_us(e) / 1000, 3),
                 "share": round(self_us(e) / total, 4)} for e in ranked],
    }


COLUMNS = [("contender", "contender"), ("steps", "steps"), ("samples", "samples"),
           ("seconds", "s"), ("real_tokens_per_s", "real tok/s"),
           ("padded_tokens_per_s", "padded tok/s"), ("pad_share", "pad share"),
           ("samples_per_s", "samples/s"), ("peak_mem_mb", "peak MB"),
           ("peak_mem_delta_mb", "+MB"), ("mfu_pct", "MFU %"), ("hfu_pct", "HFU %")]


MODEL_ALIASES = {"both": ["minilm", "tiny"], "all": ["minilm", "tiny", "bert-base"]}


def model_names(spec: str) -> list[str]:
    """``--model``: one name, an alias (both, all) or a comma-separated list."""
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        names += MODEL_ALIASES.get(part, [part])
    unknown = [n for n in names if n not in _common.MODELS]
    if unknown or not names:
        raise ValueError(f"unknown model(s) {unknown}; choose from "
                         f"{sorted(_common.MODELS)} or {sorted(MODEL_ALIASES)}")
    return names


def unpadded_arg(value: str) -> bool | str:
    words = {"auto": "auto", "true": True, "false": False}
    if value.lower() not in words:
        raise argparse.ArgumentTypeError("choose auto, true or false")
    return words[value.lower()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="both",
                        help="a name (minilm, minilm-random, tiny, bert-base), both = minilm "
                        "+ tiny, all = + bert-base, or a comma-separated list")
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
    parser.add_argument("--unpadded", type=unpadded_arg, default="auto",
                        help="ours (and bare): training.unpadded, auto | true | false "
                        "(default auto: packed batches on CUDA)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run every contender this many times (order rotated) and keep "
                        "each one's fastest run: steadier on a shared machine")
    parser.add_argument("--contenders", default=None,
                        help=f"comma-separated subset of {','.join(CONTENDERS)} (default: "
                        f"{','.join(DEFAULT_CONTENDERS['cpu'])}; on CUDA also ours_padded)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--compile", action="store_true",
                        help="ours with training.compile=true (torch.compile, dynamic shapes)")
    parser.add_argument("--profile", default="never", choices=["never", "missed", "always"],
                        help="profile ours with torch.profiler (top kernels by time): never, "
                        "where a target is missed, or always")
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--datasets-dir", type=Path, default=_common.DEFAULT_DATASETS)
    parser.add_argument("--cache-dir", type=Path, default=_common.DEFAULT_CACHE)
    parser.add_argument("--json", dest="json_path", default=None, help="write results here")
    parser.add_argument("--results-md", default=None,
                        help="append a section to this Markdown file (benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    try:
        names = model_names(args.model)
    except ValueError as exc:
        parser.error(str(exc))
    _common.check_datasets(args.datasets_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    contenders = ([c.strip() for c in args.contenders.split(",") if c.strip()]
                  if args.contenders else list(DEFAULT_CONTENDERS[args.device]))
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}; choose from {CONTENDERS}")
    targets = TARGETS_BY_DEVICE[args.device]

    machine = _common.machine_info()
    print(f"machine: {machine['nproc']} cpus ({machine['cpu']}), torch {machine['torch']}, "
          f"{machine['torch_threads']} threads, gpu {machine['gpu']}, "
          f"load {machine['load_avg_1_5_15']}")
    report: dict[str, Any] = {"benchmark": "throughput", "command": " ".join(sys.argv),
                              "machine": machine, "args": {k: str(v) if isinstance(v, Path)
                                                           else v for k, v in vars(args).items()},
                              "targets": targets, "models": {}}
    texts = []
    with _common.quiet_logs():
        for name in names:
            report["models"][name] = bench_model(name, args, contenders, targets)
            texts.append(model_markdown(name, report["models"][name], targets))
            print("\n" + texts[-1])
            _common.write_json(args.json_path, report)  # what is done so far, kept
    report["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    _common.write_json(args.json_path, report)
    loads = ", ".join(
        f"{n}: {m['load_1min_start']} at start, "
        f"{max((r['load_1min_after'] for r in m['contenders'].values()), default=None)} max "
        "after a contender" for n, m in report["models"].items())
    _common.append_markdown(args.results_md, _common.results_section(
        f"Throughput ({', '.join(names)}; {args.examples} examples/task, batch "
        f"{args.batch_size}; {args.device})", machine, loads, "\n".join(texts)))
    return 0


def bench_model(name: str, args: argparse.Namespace, contenders: list[str],
                targets: dict[str, Any] = TARGETS) -> dict[str, Any]:
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
               "ours_padded": lambda: run_ours(ctx, padded=True),
               "naive": lambda: run_plain(ctx, pad_to_max=True),
               "bare": lambda: run_plain(ctx, pad_to_max=False)}
    history: dict[str, list[float]] = {c: [] for c in contenders}
    errors: dict[str, str] = {}
    for repeat in range(args.repeats):
        shift = repeat % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            if contender in errors:
                continue
            try:
                result = runners[contender]()
            except Exception as exc:  # one broken contender must not cost the others' figures
                errors[contender] = f"{type(exc).__name__}: {exc}"[:500]
                print(f"{name}/{contender} failed: {errors[contender]}", flush=True)
                traceback.print_exc()
                _common.release_memory()
                continue
            result["load_1min_after"] = _common.load_1min()
            history[contender].append(round(result["real_tokens_per_s"], 1))
            best = results.get(contender)
            if best is None or result["real_tokens_per_s"] > best["real_tokens_per_s"]:
                results[contender] = result
            _common.release_memory()
    for contender in contenders:  # table order
        if contender in results:
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
    summary = ratios(results, targets, name)
    encoder = ctx.encoder_config
    out = {
        "encoder": {"layers": encoder.num_hidden_layers, "hidden": encoder.hidden_size,
                    "intermediate": encoder.intermediate_size,
                    "params": sum(p.numel() for p in ctx.model.encoder.parameters()),
                    "random_init": bool(_common.MODELS[name].get("random_init"))},
        "examples_per_task": {t: len(d) for t, d in ctx.train_sets.items()},
        "batch_size": ctx.batch_size,
        "total_steps": ctx.total_steps,
        "unpadded": ctx.unpadded,
        "packed_attention": ctx.attention or None,
        "peak_flops": ctx.peak_flops,
        "peak_flops_start_end": [peak, peak_end],
        "peak_source": peak_source,
        "load_1min_start": load_start,
        "contenders": results,
        "errors": errors,
        "ratios": summary,
        "missed_targets": missed_targets(summary),
    }
    if args.profile == "always" or (args.profile == "missed" and out["missed_targets"]):
        out["profile"] = profile_ours(ctx, args.profile_steps)
    return out


PROFILE_COLUMNS = [("name", "operator / kernel"), ("calls", "calls"), ("self_ms", "self ms"),
                   ("share_pct", "share %")]


def model_markdown(name: str, out: dict[str, Any], targets: dict[str, Any] = TARGETS) -> str:
    """One model's heading, table, ratios and (where taken) profile (Markdown)."""
    rows = []
    for contender, result in out["contenders"].items():
        rows.append({**result, "contender": contender, "mfu_pct": 100 * result["mfu"],
                     "hfu_pct": 100 * result["hardware_flops_utilisation"]})
    enc = out["encoder"]
    packed = (f"; ours unpadded ({out['packed_attention']})" if out.get("unpadded")
              else "; ours padded")
    text = [f"### {name}: {enc['layers']} layers x {enc['hidden']} hidden, "
            f"{enc['params'] / 1e6:.1f} M encoder params; examples/task "
            f"{out['examples_per_task']}; batch {out.get('batch_size')}; "
            f"{out['total_steps']} steps; peak "
            f"{out['peak_flops'] / 1e9:.0f} GFLOP/s ({out['peak_source']}); "
            f"load {out['load_1min_start']}{packed}", "",
            _common.format_table(rows, COLUMNS), ""]
    r = out["ratios"]

    def verdict(key: str) -> str:
        return "met" if r[key] else "NOT met"

    lines = []
    if "ours_over_hf_real_tokens" in r:
        lines.append(f"ours / HF Trainer (real tok/s): {r['ours_over_hf_real_tokens']:.2f}x "
                     f"(target >= {targets['ours_over_hf_min']}x: "
                     f"{verdict('ours_over_hf_target_met')})")
    if "ours_slower_than_bare_pct" in r:
        slower = r["ours_slower_than_bare_pct"]
        lines.append(f"ours vs bare loop: {abs(slower):.1f} % "
                     f"{'slower' if slower >= 0 else 'faster'} "
                     f"(target <= {targets['ours_slower_than_bare_max_pct']} %: "
                     f"{verdict('ours_vs_bare_target_met')})")
    if "pad_share_ours" in r:
        lines.append(f"pad share (ours): {100 * r['pad_share_ours']:.1f} % (target <= "
                     f"{100 * targets['pad_share_max']:.0f} %: "
                     f"{verdict('pad_share_target_met')})")
    if "mfu_target_met" in r:
        lines.append(f"MFU (ours): {100 * r['mfu_ours']:.1f} % (target >= "
                     f"{100 * targets['mfu_min']:.0f} %: {verdict('mfu_target_met')})")
    if "ours_over_ours_padded_real_tokens" in r:
        lines.append(f"ours / ours padded (real tok/s): "
                     f"{r['ours_over_ours_padded_real_tokens']:.2f}x")
    if "ours_over_naive_real_tokens" in r:
        lines.append(f"ours / naive pad-to-max (real tok/s): "
                     f"{r['ours_over_naive_real_tokens']:.2f}x")
    best_of = {c: v["real_tokens_per_s_all_runs"] for c, v in out["contenders"].items()
               if len(v["real_tokens_per_s_all_runs"]) > 1}
    if best_of:
        lines.append(f"fastest of each contender's runs; real tok/s of every run: {best_of}")
    if math.isnan(out["peak_flops"]):
        lines.append("MFU: n/a (GPU not in the datasheet table)")
    for contender, error in out.get("errors", {}).items():
        lines.append(f"{contender} FAILED: {error}")
    text = "\n".join(text + [f"- {line}" for line in lines]) + "\n"
    if "profile" in out:
        profile = out["profile"]
        top = [{**row, "share_pct": 100 * row["share"]} for row in profile["top"]]
        text += (f"\nProfile of ours ({profile['steps']} steps, {profile['clock']} self time, "
                 f"{profile['total_ms']:.1f} ms in all; targets missed: "
                 f"{', '.join(out['missed_targets']) or 'none'}):\n\n"
                 + _common.format_table(top, PROFILE_COLUMNS) + "\n")
    return text


if __name__ == "__main__":
    sys.exit(main())
