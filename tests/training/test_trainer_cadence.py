"""The Trainer logs, evaluates and checkpoints when TrainingControl says, in that order
(24 steps per epoch on the tiny tasks; the last evaluation and checkpoint are _finish's)."""

import pytest

from tests.training.test_trainer import make_trainer

EPOCH_END = [("ckpt", 8, 0), ("log", 10, 0), ("ckpt", 16, 0), ("log", 20, 0),
             ("ckpt", 24, 0),  # the step's checkpoint, then the epoch end's
             ("eval", 24, 1), ("ckpt", 24, 1), ("log", 30, 1), ("ckpt", 32, 1),
             ("log", 40, 1), ("ckpt", 40, 1),
             ("eval", 48, 2), ("ckpt", 48, 2)]  # _finish: no checkpoint before it at 48
CAP_ON_EPOCH_END = [("eval", 3, 0), ("eval", 6, 0), ("ckpt", 8, 0), ("eval", 9, 0),
                    ("log", 10, 0), ("eval", 12, 0), ("eval", 15, 0), ("ckpt", 16, 0),
                    ("eval", 18, 0), ("log", 20, 0), ("eval", 21, 0), ("eval", 24, 0),
                    ("ckpt", 24, 1)]  # the epoch counts as done; _finish checkpoints


@pytest.mark.parametrize(("training", "expected"), [
    (dict(eval_strategy="epoch", checkpoint_every_n_steps=8), EPOCH_END),
    (dict(eval_strategy="steps", eval_steps=3, checkpoint_every_n_steps=8, max_steps=24),
     CAP_ON_EPOCH_END),
])
def test_log_eval_checkpoint_order(tiny_config, training, expected):
    trainer = make_trainer(tiny_config(epochs=2, **training))
    assert trainer.steps_per_epoch == 24
    events = []

    def recording(kind, method):
        def call(*args):
            events.append((kind, trainer.global_step, trainer.epoch))
            return method(*args)
        return call

    trainer._log_train = recording("log", trainer._log_train)
    trainer._evaluate_and_track = recording("eval", trainer._evaluate_and_track)
    trainer._checkpoint = recording("ckpt", trainer._checkpoint)
    result = trainer.train()
    trainer.close()
    assert events == expected
    assert result.epochs_completed == (2 if expected is EPOCH_END else 1)
