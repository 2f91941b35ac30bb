"""Training checkpoints: everything an exact resume needs, written atomically.

A checkpoint folder ``<run>/checkpoints/step-<N>/`` holds:

- ``model.safetensors``: the weights;
- ``state.pt``: optimizer, scheduler and RNG states (plain tensors and numbers, loaded with
  ``torch.load(weights_only=True)``: nothing in it can run code);
- ``trainer_state.json``: counters, the position in the epoch's data plan (the plan itself
  is a pure function of seed and epoch), early stopping, the metrics so far, the run id.

It is written into a temporary folder, fsynced and renamed into place
(:func:`multitask_bert.atomic.building_dir`); ``trainer_state.json`` is written last, so a
folder without it is incomplete and ignored. The newest ``keep`` are kept. A full disk
raises :class:`~multitask_bert.errors.DiskFullError` and leaves the earlier checkpoints as
they were.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from multitask_bert.atomic import building_dir, torch_save, tree_size

log = logging.getLogger("multitask_bert.training")

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d+)$")


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict[str, Any],
    keep: int,
) -> Path:
    """Write ``checkpoints/step-<step>`` atomically and prune to the newest ``keep``.

    Raises:
        DiskFullError: out of space; the checkpoints already there are untouched (none is
            pruned) and no partial folder is left.
    """
    root = run_dir / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    for stale in root.glob(".step-*.tmp-*"):  # a killed writer's (one writer per run folder)
        shutil.rmtree(stale, ignore_errors=True)
    previous = latest_checkpoint(run_dir)
    # about what it needs: the last checkpoint's size, else weights + optimizer state
    # (AdamW: two moments per weight)
    expected = tree_size(previous) if previous else 3 * _parameter_bytes(model)
    with building_dir(final, prefix=f".step-{step:08d}.tmp-", expected_bytes=expected) as tmp:
        save_model(model, str(tmp.path / "model.safetensors"))
        torch_save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rng_state()}, tmp.path / "state.pt")
        (tmp.path / STATE_FILE).write_text(json.dumps(trainer_state, indent=1, default=float))
        tmp.commit()  # the same step again (a resumed run) replaces it
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = run_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and (path / STATE_FILE).is_file() and (path / "state.pt").is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG; returns the trainer state."""
    load_model(model, str(path / "model.safetensors"), strict=True, device=str(device))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return json.loads((path / STATE_FILE).read_text())


def _parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())
