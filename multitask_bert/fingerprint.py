"""What a trained model depends on, as one hash: the experiment fingerprint.

``experiment_fingerprint(config, data)`` hashes the resolved config minus
:data:`NOT_IN_FINGERPRINT` (settings that change where things go or how fast, never the
model) plus the fingerprint of each task's tokenised data (the cache entry's, which covers the
raw bytes, the task spec, the tokenizer and ``max_length``). One function serves:

* the checkpoint check: a run folder's checkpoints resume only an experiment with the same
  fingerprint (anything else is refused, naming the fix);
* the registry's "unchanged, skip" rule: a run whose fingerprint equals the champion's
  (version tag ``config_hash``) is not trained again unless forced.

The world size (training processes on all nodes) is in: ``batch_size`` is per process, so
the global batch, the data plan and the model change with it. A checkpoint of a 2-process run
is therefore refused by a 1-process run (its position in the epoch means another plan), and
a champion trained on 8 GPUs is not "unchanged" for a run on 1. ``training.nproc_per_node``
itself is left out (``auto`` names no number): the resolved world size stands for it. A
one-process run hashes exactly as before the world size existed.

The tokenised-data cache keys its entries by the per-task data fingerprint
(:func:`multitask_bert.data.cache.compute_fingerprint`) that this one includes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multitask_bert.config import ExperimentConfig

NOT_IN_FINGERPRINT: dict[str, str] = {
    "output_dir": "where the run folder is",
    "cache_dir": "where tokenised data is cached",
    "logging": "where and how often metrics are tracked",
    "promotion": "how a new version is compared with the champion, not what is trained",
    "training.progress_bar": "display only",
    "training.resume": "whether to continue from a checkpoint, not what is trained",
    "training.checkpoint_every_n_steps": "how often state is saved",
    "training.keep_checkpoints": "how many checkpoints are kept",
    "training.num_threads": "CPU threads: speed only",
    "training.eval_batch_size": "evaluation speed and memory only",
    "training.unpadded": "how padding is skipped: the same function, rounding-level differences",
    "training.nproc_per_node": "processes per node: the world size it resolves to (nodes x "
                               "processes) is in the fingerprint instead",
}
"""Config keys the fingerprint leaves out, each with why. Everything else is in."""


def config_for_fingerprint(config: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain data, without :data:`NOT_IN_FINGERPRINT`."""
    data = config.to_dict()
    for dotted in NOT_IN_FINGERPRINT:
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.get(key, {})
        node.pop(last, None)
    for task in data["tasks"]:  # data content is in the data fingerprints, not the paths
        for split in ("train", "validation", "test"):
            if task.get(split):
                task[split].pop("path", None)
    return data


def experiment_fingerprint(config: ExperimentConfig, data: Mapping[str, str],
                           world_size: int = 1) -> str:
    """16 hex digits of sha256 over the config (see :data:`NOT_IN_FINGERPRINT`), the
    per-task data fingerprints ``{task: fingerprint}`` and, above 1, the world size."""
    payload: dict[str, Any] = {"config": config_for_fingerprint(config),
                               "data": dict(sorted(data.items()))}
    if world_size > 1:  # one process: the same hash as before distributed runs existed
        payload["world_size"] = world_size
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
