"""What a registered version's tags say: its score, the data and config behind it.

:func:`~multitask_bert.registry.registration.register` writes these tags; :func:`champion_info`
reads them back, for the promotion rule and for pipelines that skip retraining when the data
and the config equal the champion's.
"""

from __future__ import annotations

from typing import Any

#: Version-tag prefix of the per-task validation-data fingerprints.
FINGERPRINT_TAG_PREFIX = "data_fingerprint."
#: Version-tag prefix of every head's major validation metric (``head_score.<task>/<head>``).
HEAD_SCORE_TAG_PREFIX = "head_score."


def champion_info(version: Any) -> dict[str, Any]:
    """Score, metric, data fingerprints, per-head scores, config hash and tags of a
    ModelVersion."""
    tags = dict(version.tags or {})
    try:
        score: float | None = float(tags["score"])
    except (KeyError, ValueError):
        score = None
    return {
        "score": score,
        "score_metric": tags.get("score_metric", ""),
        "data_fingerprints": {
            key[len(FINGERPRINT_TAG_PREFIX):]: value
            for key, value in tags.items()
            if key.startswith(FINGERPRINT_TAG_PREFIX)
        },
        "head_scores": _head_scores(tags),
        "config_hash": tags.get("config_hash"),
        "git_commit": tags.get("git_commit"),
        "tags": tags,
    }


def _head_scores(tags: dict[str, str]) -> dict[str, float]:
    scores = {}
    for key, value in tags.items():
        if key.startswith(HEAD_SCORE_TAG_PREFIX):
            try:
                scores[key[len(HEAD_SCORE_TAG_PREFIX):]] = float(value)
            except ValueError:
                continue
    return scores
