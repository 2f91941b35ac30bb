"""Flow control of training: when to log, evaluate, checkpoint and stop. No torch here.

The trainer's loop owns the math of a step. After each optimizer step, and at the end of
each epoch, it asks :class:`TrainingControl` for the :class:`Actions` to take and takes them
in this order: log, evaluate, checkpoint, stop. An evaluation can end training early (early
stopping); :meth:`Actions.early_stopped` then turns the actions into a stop.

Training stops when the step budget (``total_steps``: the epochs' steps, capped by
``max_steps``) is spent, when the epochs are, or when early stopping says so. There is no
checkpoint on the way out: the trainer writes the final one when it finishes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from multitask_bert.config import TrainingConfig


@dataclass(frozen=True)
class Actions:
    """What to do now, in this order: log, evaluate, checkpoint, stop."""

    log: bool = False
    evaluate: bool = False
    checkpoint: bool = False
    stop: bool = False

    def early_stopped(self) -> Actions:
        """The actions once the evaluation said stop: stop, without a checkpoint."""
        return replace(self, checkpoint=False, stop=True)


@dataclass(frozen=True)
class TrainingControl:
    """The cadence of a training run, from its config.

    Args:
        total_steps: optimizer steps of the whole run (the epochs', capped by ``max_steps``).
        epochs: epochs of the run.
        eval_strategy: evaluate at each epoch end, every ``eval_steps`` steps, or never.
        eval_steps: the interval of ``eval_strategy: steps``.
        checkpoint_every_n_steps: checkpoint interval in steps (None: at epoch ends only).
        log_every_n_steps: log the training stats every N steps.
    """

    total_steps: int
    epochs: int
    eval_strategy: Literal["epoch", "steps", "no"] = "epoch"
    eval_steps: int | None = None
    checkpoint_every_n_steps: int | None = None
    log_every_n_steps: int = 1

    @classmethod
    def from_config(cls, training: TrainingConfig, log_every_n_steps: int,
                    total_steps: int) -> TrainingControl:
        """The control of ``training`` (the ``training`` config section)."""
        return cls(total_steps=total_steps, epochs=training.epochs,
                   eval_strategy=training.eval_strategy, eval_steps=training.eval_steps,
                   checkpoint_every_n_steps=training.checkpoint_every_n_steps,
                   log_every_n_steps=log_every_n_steps)

    def at_start(self, global_step: int, epoch: int) -> Actions:
        """Before the first step (of a fresh or a resumed run): stop when nothing is left."""
        return Actions(stop=self._out_of_budget(global_step, epoch))

    def after_step(self, global_step: int, epoch: int) -> Actions:
        """After optimizer step ``global_step`` (counted from 1) in epoch ``epoch`` (from 0)."""
        stop = self._out_of_budget(global_step, epoch)
        every = self.checkpoint_every_n_steps
        return Actions(
            log=global_step % self.log_every_n_steps == 0,
            evaluate=self.eval_strategy == "steps" and global_step % self.eval_steps == 0,
            checkpoint=bool(every) and global_step % every == 0 and not stop,
            stop=stop,
        )

    def after_epoch(self, global_step: int, epochs_done: int) -> Actions:
        """At the end of an epoch that ran to its end, ``epochs_done`` epochs done in all
        (not called when a step already stopped training)."""
        stop = self._out_of_budget(global_step, epochs_done)
        return Actions(evaluate=self.eval_strategy == "epoch", checkpoint=not stop, stop=stop)

    def _out_of_budget(self, global_step: int, epochs_done: int) -> bool:
        return global_step >= self.total_steps or epochs_done >= self.epochs
