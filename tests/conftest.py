"""Shared fixtures: tiny random BERTs with the real packaged tokenizer, few-row task files."""

from __future__ import annotations

import json
import os
import random
import socket
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MTB_SHARED_DIR", REPO.parent / "shared")).resolve()
DATASETS = SHARED / "datasets"

TINY_ENCODER: dict[str, Any] = {
    "random_init": True,
    "config_overrides": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    },
}

_NAMES = ["alice", "bob", "carol", "dmitri", "eve"]
_PLACES = ["paris", "berlin", "lima", "oslo"]
_VERBS = ["visited", "left", "saw"]


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, read, released); never 4200,
    the Prefect server's default port that `make demo` may be using."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return port if port != 4200 else free_port()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _tagging_rows(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(n):
        name, verb, place = rng.choice(_NAMES), rng.choice(_VERBS), rng.choice(_PLACES)
        tokens = [name.title(), "smith", verb, place.title(), "today", "."]
        rows.append({
            "tokens": tokens,
            "ner": ["B-PER", "I-PER", "O", "B-LOC", "O", "O"],
            "pos": ["PROPN", "PROPN", "VERB", "PROPN", "NOUN", "PUNCT"],
        })
    return rows


def _sentiment_rows(n: int, rng: random.Random) -> list[dict]:
    good, bad = ["great", "lovely", "superb"], ["awful", "boring", "dreadful"]
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        word = rng.choice(good if positive else bad)
        rows.append({"text": f"the film was {word} and {rng.choice(_NAMES)} said so",
                     "label": "pos" if positive else "neg"})
    return rows


def _pair_rows(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(n):
        a = f"{rng.choice(_NAMES)} {rng.choice(_VERBS)} {rng.choice(_PLACES)}"
        b = a if i % 2 == 0 else f"{rng.choice(_NAMES)} cooked soup"
        rows.append({"text_a": a, "text_b": b, "score": 5.0 if i % 2 == 0 else 0.5})
    return rows


def _topic_rows(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(n):
        topics = [["sports"], ["politics"], ["sports", "politics"]][i % 3]
        words = {"sports": "the match ended", "politics": "the vote passed"}
        rows.append({"text": " and ".join(words[t] for t in topics), "topics": topics})
    return rows


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    """A folder with four tiny tasks (token, sequence, pair regression, multilabel)."""
    rng = random.Random(0)
    root = tmp_path / "tasks"
    for split, n in (("train", 24), ("validation", 8)):
        write_jsonl(root / "tagging" / f"{split}.jsonl", _tagging_rows(n, rng))
        write_jsonl(root / "sentiment" / f"{split}.jsonl", _sentiment_rows(n, rng))
        write_jsonl(root / "pairs" / f"{split}.jsonl", _pair_rows(n, rng))
        write_jsonl(root / "topics" / f"{split}.jsonl", _topic_rows(n, rng))
    return root


def tiny_tasks(root: Path) -> list[dict]:
    return [
        {"name": "tagging", "type": "token",
         "heads": [{"name": "ner", "type": "tagging", "scheme": "IOB2"},
                   {"name": "pos", "type": "tagging"}],
         "train": str(root / "tagging/train.jsonl"),
         "validation": str(root / "tagging/validation.jsonl")},
        {"name": "sentiment", "type": "sequence",
         "heads": [{"name": "label", "type": "classification"}],
         "train": str(root / "sentiment/train.jsonl"),
         "validation": str(root / "sentiment/validation.jsonl")},
        {"name": "pairs", "type": "sequence",
         "heads": [{"name": "score", "type": "regression"}],
         "train": str(root / "pairs/train.jsonl"),
         "validation": str(root / "pairs/validation.jsonl")},
        {"name": "topics", "type": "sequence",
         "heads": [{"name": "topics", "type": "multilabel",
                    "labels": ["sports", "politics", "health"]}],
         "train": str(root / "topics/train.jsonl"),
         "validation": str(root / "topics/validation.jsonl")},
    ]


def tiny_config_dict(root: Path, out: Path, **training: Any) -> dict:
    return {
        "name": "tiny",
        "encoder": TINY_ENCODER,
        "tasks": tiny_tasks(root),
        "max_length": 32,
        "training": {"epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "seed": 7,
                     "progress_bar": False, **training},
        "logging": {"backend": "none"},
        "output_dir": str(out / "run"),
        "cache_dir": str(out / "cache"),
    }


@pytest.fixture
def tiny_config(task_dir: Path, tmp_path: Path):
    from multitask_bert.config import ExperimentConfig

    def make(**training: Any) -> ExperimentConfig:
        return ExperimentConfig.from_dict(tiny_config_dict(task_dir, tmp_path, **training),
                                          base_dir=tmp_path)

    return make
