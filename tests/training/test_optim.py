"""The optimizer and schedule builders on a two-layer toy model."""

from types import SimpleNamespace

import pytest
import torch

from multitask_bert.training.optim import build_optimizer, build_scheduler


def toy() -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    model[0].bias.requires_grad_(False)  # frozen parameters are left out
    return model


def test_no_weight_decay_on_1d_parameters_and_fused_on_cpu():
    model = toy()
    opt = build_optimizer(model, lr=0.1, weight_decay=0.01, device=torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])]
    assert [p.shape for p in no_decay["params"]] == [torch.Size([4]), torch.Size([4])]
    assert opt.defaults["fused"] is True


def sched_args(**kw):
    return SimpleNamespace(**{"warmup_steps": None, "warmup_ratio": 0.0, "scheduler": "linear",
                              **kw})


def lrs(args, total: int) -> list[float]:
    opt = build_optimizer(toy(), lr=1.0, weight_decay=0.0, device=torch.device("cpu"))
    sched = build_scheduler(opt, args, total)
    out = []
    for _ in range(total):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def test_warmup_ratio_rounds_up_then_linear_decay():
    assert lrs(sched_args(warmup_ratio=0.25), 10) == pytest.approx(
        [0.0, 1 / 3, 2 / 3, 1.0, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7])  # ceil(2.5) = 3


def test_warmup_steps_override_the_ratio_and_constant_keeps_the_peak():
    assert lrs(sched_args(warmup_steps=2, warmup_ratio=0.9, scheduler="constant"), 5) == (
        pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0]))
