"""Names that moved out of trainer.py are still importable from it (the same objects)."""

from multitask_bert.evaluation import loop
from multitask_bert.training import meter, result, trainer


def test_trainer_module_reexports_the_moved_names():
    assert trainer.TrainResult is result.TrainResult
    assert trainer.evaluate_model is loop.evaluate_model
    assert trainer.peak_flops is meter.peak_flops
