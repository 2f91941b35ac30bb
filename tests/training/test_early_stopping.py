import math

import pytest

from multitask_bert.training.early_stopping import EarlyStopping


def test_max_mode_tracks_best_and_stops_after_patience():
    stop = EarlyStopping("max", patience=2, min_delta=0.01)
    assert stop.update(0.50, 1)
    assert stop.update(0.60, 2)
    assert not stop.update(0.605, 3)  # within min_delta: not an improvement
    assert not stop.should_stop
    assert not stop.update(0.40, 4)
    assert stop.should_stop
    assert (stop.best, stop.best_step) == (0.60, 2)


def test_min_mode_and_reset_of_bad_count():
    stop = EarlyStopping("min", patience=2)
    stop.update(1.0, 1)
    assert not stop.update(1.5, 2)
    assert stop.update(0.5, 3)
    assert stop.bad_evals == 0 and not stop.should_stop


def test_no_patience_never_stops_and_nan_is_no_improvement():
    stop = EarlyStopping("max")
    stop.update(0.3, 1)
    for step in range(2, 50):
        stop.update(0.1, step)
    assert not stop.should_stop
    assert not stop.update(math.nan, 51)


def test_state_round_trip():
    stop = EarlyStopping("max", patience=3)
    stop.update(0.2, 5)
    stop.update(0.1, 6)
    clone = EarlyStopping("max", patience=3)
    clone.load_state_dict(stop.state_dict())
    assert clone == stop


def test_bad_mode():
    with pytest.raises(ValueError):
        EarlyStopping("up")
