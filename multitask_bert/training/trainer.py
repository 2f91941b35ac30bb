"""The round-robin multi-task Trainer.

Contract (the seed's): ``Trainer(config, model, tokenizer, train_datasets, eval_datasets)``,
then ``train()``, ``evaluate()``, ``close()``. ``train()`` owns the math of a step;
:class:`~multitask_bert.training.control.TrainingControl` says when to log, evaluate,
checkpoint and stop; evaluation, early stopping, checkpoints and logging are methods the loop
calls. The pieces live beside it: ``control``, ``meter``, ``optim``, ``result``,
``checkpoint`` and :mod:`multitask_bert.evaluation.loop`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from multitask_bert.atomic import write_json_atomic
from multitask_bert.config import RUN_CONFIG_FILE, EarlyStoppingConfig, ExperimentConfig
from multitask_bert.data.batching import epoch_rng, plan_batches
from multitask_bert.data.dataset import Batch, TaskDataset
from multitask_bert.errors import ConfigError, MultitaskBertError
from multitask_bert.evaluation.evaluator import Metrics, flatten_metrics, major_score
from multitask_bert.evaluation.loop import evaluate_model
from multitask_bert.fingerprint import experiment_fingerprint
from multitask_bert.heads import HEAD_TYPES
from multitask_bert.models.multitask import MultiTaskModel
from multitask_bert.models.packing import attention_backends, packing_problem
from multitask_bert.tracking import NoOpLogger, TrackingLogger, create_logger
from multitask_bert.training import distributed
from multitask_bert.training.checkpoint import (
    STATE_FILE,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from multitask_bert.training.control import Actions, TrainingControl
from multitask_bert.training.early_stopping import EarlyStopping
from multitask_bert.training.meter import ThroughputMeter, peak_flops
from multitask_bert.training.optim import build_optimizer, build_scheduler
from multitask_bert.training.result import TrainResult
from multitask_bert.training.sampling import build_sampler
from multitask_bert.training.telemetry import gradient_conflicts, telemetry_batches

# TrainResult, evaluate_model and peak_flops live in their own modules now; importing them
# from here keeps working.
__all__ = ["TrainResult", "Trainer", "TrainingDivergedError", "evaluate_model", "peak_flops"]

log = logging.getLogger("multitask_bert.training")



class TrainingDivergedError(MultitaskBertError):
    """The training loss became NaN or infinite (names the step and the task)."""


class Trainer:
    """Trains a :class:`MultiTaskModel` on several tasks, one batch of one task per step.

    Args:
        config: the experiment config (``training`` and ``logging`` sections are used).
        model: encoder + heads.
        tokenizer: saved with the model folders.
        train_datasets: ``{task: TaskDataset}`` of training splits.
        eval_datasets: ``{task: TaskDataset}`` of evaluation splits (may be empty).
        logger: tracking logger; built from ``config.logging`` when None.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        model: MultiTaskModel,
        tokenizer: Any,
        train_datasets: dict[str, TaskDataset],
        eval_datasets: dict[str, TaskDataset],
        logger: TrackingLogger | None = None,
    ) -> None:
        config = config.resolve()  # idempotent: run folder, tracking URI, experiment name
        self.config, self.args, self.tokenizer = config, config.training, tokenizer
        self.train_datasets, self.eval_datasets = train_datasets, eval_datasets
        self.output_dir = config.run_dir
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._place_model(model)
        self.sampler = build_sampler(self.args.sampling, self.args.sampling_temperature)
        self.steps_per_epoch = math.ceil(
            len(self.epoch_plan(0)) / self.args.gradient_accumulation_steps
        )
        total = self.steps_per_epoch * self.args.epochs
        self.total_steps = min(total, self.args.max_steps or total)
        self.optimizer = build_optimizer(self.model, self.args.learning_rate,
                                         self.args.weight_decay, self.device)
        self.scheduler = build_scheduler(self.optimizer, self.args, self.total_steps)
        self.early_stopping = _build_early_stopping(self.args.early_stopping)
        self.heads = {t.name: list(t.heads) for t in config.tasks if t.name in eval_datasets}
        self.global_step = 0
        self.epoch = 0
        self._window = 0  # where in the epoch's plan the next step starts
        self._closed = False
        self._last_eval_step: int | None = None
        self._telemetry_batches: dict[str, list[Batch]] | None = None
        # while train() runs: (when this process's loop started, train_seconds before it)
        self._clock: tuple[float, float] | None = None
        self._fingerprint = experiment_fingerprint(
            config, {name: data.identity for name, data in train_datasets.items()},
            world_size=self.dist.world_size)
        self.resumed_from: Path | None = None
        checkpoint, saved = self._find_checkpoint()
        self.logger = self._make_logger(logger, resume_run_id=saved.get("run_id"))
        self.result = TrainResult(score_metric=self.args.early_stopping.metric,
                                  output_dir=str(self.output_dir), run_id=self.logger.run_id,
                                  world_size=self.dist.world_size)
        if checkpoint is not None:
            self._restore(checkpoint)

    # -- setup (what __init__ builds) ----------------------------------------------------
    def _place_model(self, model: MultiTaskModel) -> None:
        """The device, the model on it, the DDP wrapper (torchrun), the compiled step model
        and the autocast context of the forward passes."""
        if self.args.num_threads:
            torch.set_num_threads(self.args.num_threads)
        self.dist = distributed.current()
        self.device = _pick_device(self.args, self.dist)
        self.model = model.to(self.device)
        # Under torchrun: every rank steps the same task; heads of the other tasks get no
        # gradient in a step, hence find_unused_parameters.
        self.ddp_model: torch.nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                else None, find_unused_parameters=True)
        # torch.compile: shapes vary with the padded length (a multiple of
        # pad_to_multiple_of: raise it, e.g. to 32, to bound recompiles) and the task's heads.
        self.step_model: Any = (
            torch.compile(self.ddp_model, dynamic=True) if self.args.compile else self.ddp_model
        )
        # bf16 autocast on CUDA only: on these CPUs it was measured slower than fp32.
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        self.unpadded = self._use_unpadded()

    def _use_unpadded(self) -> bool:
        """Whether training steps run packed batches (``training.unpadded``; ``auto``: on
        CUDA, where the encoder passes :func:`packing_problem`'s check)."""
        setting = self.args.unpadded
        if not (self.device.type == "cuda" if setting == "auto" else setting):
            return False
        problem = packing_problem(self.model.encoder)
        if problem is not None:
            if setting == "auto":
                log.warning("unpadded training is off (padded batches instead): %s", problem)
                return False
            raise ConfigError(f"training.unpadded=true, but this encoder cannot run packed "
                              f"batches: {problem}. Set training.unpadded to auto or false")
        log.info("unpadded training: packed batches, attention kernel %s",
                 attention_backends(self.device).describe())
        return True

    def _find_checkpoint(self) -> tuple[Path | None, dict[str, Any]]:
        """The newest checkpoint to resume from (with ``training.resume``) and its saved
        state; refuses checkpoints of another experiment."""
        checkpoint = latest_checkpoint(self.output_dir) if self.args.resume else None
        saved = json.loads((checkpoint / STATE_FILE).read_text()) if checkpoint else {}
        saved_world = saved.get("result", {}).get("world_size") or 1
        if saved and saved.get("fingerprint") != self._fingerprint and (
                saved_world != self.dist.world_size):
            raise ConfigError(
                f"{self.output_dir} holds checkpoints of a run with {saved_world} training "
                f"process(es), this one has {self.dist.world_size}: batch_size is per process, "
                "so the global batch and the data plan differ. Run with the same number of "
                "processes (training.nproc_per_node, nodes), or set training.resume=false to "
                "start over")
        if saved and saved.get("fingerprint") != self._fingerprint:
            raise ConfigError(
                f"{self.output_dir} holds checkpoints of a different experiment (config or "
                "data changed); use another output_dir, or set training.resume=false to start "
                "over (its checkpoints will be replaced)"
            )
        return checkpoint, saved

    def _make_logger(self, logger: TrackingLogger | None,
                     resume_run_id: str | None) -> TrackingLogger:
        """``logger``, else one built from ``config.logging`` (continuing the checkpoint's
        tracking run); a no-op on the ranks other than 0."""
        if logger is None and not self.dist.is_main:
            logger = NoOpLogger()  # rank 0 logs for everyone
        return logger or create_logger(
            self.config.logging.backend,
            output_dir=self.output_dir,
            experiment_name=self.config.logging.experiment_name or self.config.name,
            run_name=self.output_dir.name,  # the run folder: the flow run's name, as in TB
            tracking_uri=self.config.logging.tracking_uri,
            resume_run_id=resume_run_id,
        )

    # -- data order --------------------------------------------------------------------
    def epoch_plan(self, epoch: int) -> list[tuple[str, list[int]]]:
        """Every step of one epoch: (task, example indices of the global batch). Depends
        only on seed + epoch, so every rank of a distributed run builds the same plan."""
        seed, plans, world = self.args.seed, {}, self.dist.world_size
        for stream, (name, dataset) in enumerate(self.train_datasets.items()):
            plans[name] = plan_batches(
                dataset.lengths,
                self.args.batch_size_for(name) * world,
                rng=epoch_rng(seed, epoch, stream),
                group_by_length=self.args.group_by_length,
            )
        order = self.sampler.epoch_order(
            {name: len(p) for name, p in plans.items()}, epoch_rng(seed, epoch, -1)
        )
        taken = dict.fromkeys(plans, 0)
        steps = []
        for name in order:
            n, batches = taken[name], plans[name]
            if n and n % len(batches) == 0:  # temperature sampling repeats a small task
                stream = 1000 * (n // len(batches)) + list(plans).index(name)
                batches[:] = plan_batches(
                    self.train_datasets[name].lengths,
                    self.args.batch_size_for(name) * world,
                    rng=epoch_rng(seed, epoch, stream),
                    group_by_length=self.args.group_by_length,
                )
            steps.append((name, batches[n % len(batches)]))
            taken[name] += 1
        if world > 1:  # a batch too small to give every rank an example is dropped
            steps = [(name, batch) for name, batch in steps if len(batch) >= world]
        return steps

    # -- training ----------------------------------------------------------------------
    def train(self) -> TrainResult:
        """Run the epochs; evaluate, keep the best model, stop early; return the metrics.

        Resumes from the newest checkpoint in the output folder when there is one."""
        args, accum = self.args, self.args.gradient_accumulation_steps
        control = TrainingControl.from_config(args, self.config.logging.log_every_n_steps,
                                              self.total_steps)
        if self.resumed_from is None:
            self._log_start()
            # dropout draws from the global RNG: same seed, same run (one stream per rank)
            torch.manual_seed(args.seed + self.dist.rank)
        meter = ThroughputMeter(self.train_datasets, self.model.encoder.config, self.device)
        progress = tqdm(total=self.total_steps, initial=self.global_step, unit="step",
                        disable=not args.progress_bar, dynamic_ncols=True, desc="train")
        started, act = time.perf_counter(), control.at_start(self.global_step, self.epoch)
        self._eta_origin = (started, self.global_step)  # for the ETA of the log lines
        # train_seconds sums every process of a resumed run: the checkpoint holds the sum
        self._clock = (started, self.result.train_seconds)
        self.model.train()
        while not act.stop:
            plan = self.epoch_plan(self.epoch)
            for start in range(self._window, len(plan), accum):
                # pick tasks: the step's window of the epoch plan (one batch of one task each)
                window = plan[start : start + accum]
                # forward/backward: the window's batches (any tasks) sum into one step
                for i, (task, indices) in enumerate(window):
                    batch = self._to_device(self.train_datasets[task].collate(
                        distributed.shard(indices, self.dist), packed=self.unpadded))
                    # under DDP, gradients are all-reduced on the window's last backward only
                    sync = i == len(window) - 1 or not self.dist.enabled
                    no_sync = contextlib.nullcontext() if sync else self.ddp_model.no_sync()
                    with self.autocast, no_sync:
                        out = self.step_model(batch.input_ids, batch.attention_mask, batch.labels,
                                              task_id=task, token_type_ids=batch.token_type_ids,
                                              word_shapes=batch.word_shapes,
                                              packing=batch.packing)
                        self._check_finite(out.loss, task)
                        (out.loss / len(window)).backward()
                    meter.add(task, out.loss.detach(), batch)
                # clip, step, schedule
                if args.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.global_step, self._window = self.global_step + 1, start + accum
                progress.update()
                act = control.after_step(self.global_step, self.epoch)
                # log (reading the loss is a device sync point: only every N steps)
                if act.log:
                    self._log_train(meter, progress)
                # maybe evaluate / checkpoint / stop
                act = self._evaluate_and_checkpoint(act)
                if act.stop:
                    break
            if self._window >= len(plan):  # the epoch ran to its end (maybe with a stop)
                self._end_epoch()
                if not act.stop:
                    act = self._evaluate_and_checkpoint(
                        control.after_epoch(self.global_step, self.epoch))
        progress.close()
        self._update_train_seconds()
        self._clock = None  # the final evaluation is not training time
        self._finish()
        return self.result

    def _evaluate_and_checkpoint(self, act: Actions) -> Actions:
        """Evaluate and checkpoint as ``act`` says; early stopping turns it into a stop."""
        if act.evaluate and self._evaluate_and_track():
            act = act.early_stopped()
        if act.checkpoint:
            self._checkpoint()
        return act

    def _end_epoch(self) -> None:
        self.epoch, self._window = self.epoch + 1, 0
        self.result.epochs_completed = self.epoch

    def _to_device(self, batch: Batch) -> Batch:
        if self.device.type == "cuda":  # pinned host memory: the copy overlaps compute
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch

    def _check_finite(self, loss: torch.Tensor, task: str) -> None:
        # On CPU this check is free; on CUDA `.item()` would sync every step, so the
        # throughput meter checks the summed losses at logging steps instead.
        if self.device.type == "cpu" and not math.isfinite(loss.item()):
            self._diverged(loss.item(), task)

    def _diverged(self, value: float, task: str) -> None:
        last = latest_checkpoint(self.output_dir)
        raise TrainingDivergedError(
            f"non-finite training loss ({value}) on task {task!r} at step "
            f"{self.global_step + 1}; the last good checkpoint is "
            f"{last or 'none (no checkpoint yet)'}. Lower training.learning_rate, check "
            f"{task}'s data, or set training.max_grad_norm"
        )

    def _update_train_seconds(self) -> None:
        """``result.train_seconds``: what the resumed checkpoint held plus this process's
        training loop so far (the time after the last checkpoint of a killed process is
        lost with it)."""
        if self._clock is not None:
            started, before = self._clock
            self.result.train_seconds = before + time.perf_counter() - started

    # -- checkpoints -------------------------------------------------------------------
    def _checkpoint(self) -> Path:
        self._update_train_seconds()
        state = {
            "fingerprint": self._fingerprint,
            "global_step": self.global_step,
            "epoch": self.epoch,
            "window": self._window,
            "early_stopping": self.early_stopping.state_dict(),
            "last_eval_step": self._last_eval_step,
            "result": self.result.to_dict(),
            "run_id": self.logger.run_id,
        }
        path = self.output_dir / "checkpoints"
        if self.dist.is_main:
            path = save_checkpoint(self.output_dir, self.global_step, self.model,
                                   self.optimizer, self.scheduler, state,
                                   keep=self.args.keep_checkpoints)
            log.debug("checkpoint %s", path)
        distributed.barrier(self.dist)
        return path

    def _restore(self, checkpoint: Path) -> None:
        state = load_checkpoint(checkpoint, self.model, self.optimizer, self.scheduler,
                                self.device)
        self.global_step, self.epoch = state["global_step"], state["epoch"]
        self._window = state["window"]
        self.early_stopping.load_state_dict(state["early_stopping"])
        self._last_eval_step = state["last_eval_step"]
        saved = state["result"]
        self.result = TrainResult(**{**saved, "run_id": self.logger.run_id})
        self.resumed_from = checkpoint
        self.result.resumed_from_step = self.global_step
        log.info("resuming from %s (step %d, epoch %d)", checkpoint, self.global_step,
                 self.epoch)

    def _evaluate_and_track(self) -> bool:
        """Evaluate, log, keep the best model; True when early stopping says stop."""
        metrics = self.evaluate()
        self._last_eval_step = self.global_step
        self.result.last = metrics
        self.result.global_step = self.global_step
        if not metrics:
            return False
        score = major_score(metrics, self.args.early_stopping.metric, self.heads)
        self.logger.log_metrics(
            {**flatten_metrics(metrics), "eval/score": score}, step=self.global_step
        )
        self._gradient_telemetry()
        if self.early_stopping.update(score, self.global_step):
            self.result.best, self.result.best_score = metrics, score
            self.result.best_step = self.global_step
            if self.dist.is_main:
                self.model.save(self.output_dir / "best", self.tokenizer)
            log.info("step %d: new best %s = %.4f", self.global_step,
                     self.args.early_stopping.metric, score)
        self._write_metrics()
        if self.early_stopping.should_stop:
            log.info("early stopping at step %d: no improvement in %d evaluations",
                     self.global_step, self.early_stopping.bad_evals)
            self.result.stopped_early = True
            return True
        return False

    def _gradient_telemetry(self) -> None:
        """Each task's gradient norm on the shared encoder and the cosine between every two
        tasks' gradients, on fixed batches (rank 0; eval mode, so no dropout and no RNG)."""
        if not (self.config.logging.gradient_telemetry and self.dist.is_main):
            return
        started = time.perf_counter()
        if self._telemetry_batches is None:
            self._telemetry_batches = telemetry_batches(
                self.train_datasets, self.args.batch_size_for,
                self.config.logging.gradient_telemetry_batches)
        stats = gradient_conflicts(self.model, self._telemetry_batches, self.device,
                                   self.autocast, self.config.logging.gradient_telemetry_layers)
        self.result.telemetry_seconds += time.perf_counter() - started
        self.result.gradients = stats
        self.logger.log_metrics(stats, step=self.global_step)

    def evaluate(self, datasets: dict[str, TaskDataset] | None = None) -> Metrics:
        """Per-head metrics on ``datasets`` (default: the eval datasets)."""
        datasets = self.eval_datasets if datasets is None else datasets
        return evaluate_model(self.model, datasets, self.args.eval_batch_size, self.device,
                              self.autocast, self.dist)

    def close(self) -> None:
        """Close the tracking loggers (idempotent)."""
        if not self._closed:
            self.logger.close()
            self._closed = True

    # -- helpers -----------------------------------------------------------------------
    def _finish(self) -> None:
        self.result.global_step = self.global_step
        if (
            self.args.eval_strategy != "no"
            and self.eval_datasets
            and self._last_eval_step != self.global_step
        ):
            self._evaluate_and_track()
        if self.result.best_step is None:  # nothing evaluated: the final model is the best
            if self.dist.is_main:
                self.model.save(self.output_dir / "best", self.tokenizer)
            self.result.best_step = self.global_step
        if self.dist.enabled:  # the ranks must agree on the weights: record each one's sum
            checksum = float(sum(p.double().sum() for p in self.model.parameters()))
            self.result.rank_weight_checksums = distributed.gather_objects(checksum, self.dist)
        self.result.world_size = self.dist.world_size
        self._write_metrics()
        self._checkpoint()  # the final state: weights to compare, or to continue from
        self.logger.log_artifact(self.output_dir / "metrics.json")

    def _write_metrics(self) -> None:
        self._update_train_seconds()
        if self.dist.is_main:
            write_json_atomic(self.output_dir / "metrics.json", self.result.to_dict())

    def _log_start(self) -> None:
        # credentials in a tracking URI never reach the run folder or the tracking server
        safe = self.config.redacted_dict()
        if self.dist.is_main and not (self.output_dir / RUN_CONFIG_FILE).is_file():
            self.config.write()  # used as a library: nothing wrote the run's config yet
        params = dict(safe)
        params.pop("tasks")
        params["tasks"] = ",".join(t.name for t in self.config.tasks)
        params["train_examples"] = {n: len(d) for n, d in self.train_datasets.items()}
        params["total_steps"] = self.total_steps
        params["device"] = str(self.device)
        params["unpadded"] = self.unpadded
        if self.unpadded:
            params["packed_attention"] = attention_backends(self.device).describe()
        params["world_size"] = self.dist.world_size
        self.logger.log_params(params)
        self.logger.log_dict(safe, "config.yaml")
        log.info("training %s on %s: %d optimizer steps (%d per epoch), device %s",
                 self.config.name, ", ".join(self.train_datasets), self.total_steps,
                 self.steps_per_epoch, self.device)

    def _eta(self) -> str:
        """Time left at this run's rate so far (``12m05s``); ``?`` before the first step."""
        started, first_step = getattr(self, "_eta_origin", (time.perf_counter(), 0))
        done, elapsed = self.global_step - first_step, time.perf_counter() - started
        if done <= 0 or elapsed <= 0:
            return "?"
        seconds = int((self.total_steps - self.global_step) * elapsed / done)
        return f"{seconds // 60}m{seconds % 60:02d}s"

    def _log_train(self, meter: ThroughputMeter, progress: tqdm) -> None:
        stats = meter.flush()
        for task in self.train_datasets:
            value = stats.get(f"train/{task}/loss", 0.0)
            if not math.isfinite(value):
                self._diverged(value, task)
        stats["train/lr"] = self.scheduler.get_last_lr()[0]
        for head, value in self.model.log_variances().items():  # uncertainty balancing
            stats[f"loss_balancing/{head}/log_variance"] = value
        stats["train/epoch"] = self.epoch
        self.logger.log_metrics(stats, step=self.global_step)
        if not self.args.progress_bar:  # plain lines for logs that are not a terminal
            log.info("step %d/%d epoch %d loss %.4f %.0f samples/s %.0f tokens/s MFU %.1f%% "
                     "ETA %s", self.global_step, self.total_steps, self.epoch,
                     stats["train/loss"], stats["train/samples_per_s"],
                     stats["train/tokens_per_s"], 100 * stats.get("train/mfu", 0.0),
                     self._eta())
        progress.set_postfix(loss=f"{stats['train/loss']:.4f}",
                             samples_s=f"{stats['train/samples_per_s']:.0f}",
                             tok_s=f"{stats['train/tokens_per_s']:.0f}", refresh=False)


def _build_early_stopping(stopping: EarlyStoppingConfig) -> EarlyStopping:
    """The early-stopping rule of ``training.early_stopping``; without a ``mode``, lower is
    better for ``loss`` and for the metrics a head type says are (mse, mae)."""
    lower_is_better = {"loss"}.union(*(kind.lower_is_better for kind in HEAD_TYPES.values()))
    mode = stopping.mode or (
        "min" if stopping.metric.rsplit("/", 1)[-1] in lower_is_better else "max"
    )
    return EarlyStopping(mode, stopping.patience, stopping.min_delta)


def _pick_device(args: Any, dist_info: distributed.DistInfo) -> torch.device:
    if args.uses_cuda():
        return torch.device("cuda", dist_info.local_rank)
    return torch.device("cpu")
