"""The throughput meter: per-task loss means, rates, padding share, peak looked up once."""

from types import SimpleNamespace

import pytest
import torch

from multitask_bert.training import meter as meter_module
from multitask_bert.training.meter import ThroughputMeter, peak_flops


@pytest.fixture
def fake_cpu_peak(monkeypatch):
    calls = []

    def measure(seconds: float) -> float:
        calls.append(seconds)
        return 1e12

    meter_module._peak_flops.cache_clear()
    monkeypatch.setattr(meter_module, "measure_cpu_peak_flops", measure)
    yield calls
    meter_module._peak_flops.cache_clear()  # later tests measure the real peak


def batch(rows: int, lengths: list[int], width: int) -> SimpleNamespace:
    return SimpleNamespace(indices=list(range(rows)), real_tokens=sum(lengths),
                           padded_tokens=rows * width, lengths=lengths)


def test_flush_averages_the_loss_per_task_and_over_all_batches():
    meter = ThroughputMeter({"a": None, "b": None})
    meter.add("a", torch.tensor(1.0), batch(2, [3, 5], 5))
    meter.add("a", torch.tensor(3.0), batch(2, [4, 4], 4))
    meter.add("b", torch.tensor(8.0), batch(1, [2], 4))
    stats = meter.flush()
    assert stats["train/a/loss"] == 2.0
    assert stats["train/b/loss"] == 8.0
    assert stats["train/loss"] == 4.0  # (1 + 3 + 8) / 3 batches
    assert stats["train/pad_ratio"] == pytest.approx(1 - 18 / 22)
    assert stats["train/samples_per_s"] > 0 and stats["train/tokens_per_s"] > 0
    assert "train/mfu" not in stats  # no encoder config: no FLOPs counted
    empty = meter.flush()  # a new window
    assert "train/a/loss" not in empty and empty["train/pad_ratio"] == 0.0


def test_mfu_uses_the_peak_measured_once_per_process_before_the_first_window(fake_cpu_peak):
    config = SimpleNamespace(hidden_size=8, num_hidden_layers=1, intermediate_size=16)
    first = ThroughputMeter({"a": None}, config, torch.device("cpu"))
    assert fake_cpu_peak == [0.3]  # measured in the constructor, before any step is timed
    ThroughputMeter({"a": None}, config, torch.device("cpu"))
    assert peak_flops(torch.device("cpu")) == 1e12
    assert fake_cpu_peak == [0.3]  # ...and only once
    first.add("a", torch.tensor(1.0), batch(1, [4], 4))
    stats = first.flush()
    assert stats["train/flops_per_s"] > 0
    assert stats["train/mfu"] == pytest.approx(stats["train/flops_per_s"] / 1e12)


def test_no_peak_lookup_without_an_encoder_config(fake_cpu_peak):
    assert ThroughputMeter({"a": None}, None, torch.device("cpu")).peak is None
    assert fake_cpu_peak == []
