"""What a registered version's tags say: its score, the data and config behind it.

:func:`~multitask_bert.registry.registration.register` writes these tags; :func:`champion_info`
reads them back, for the promotion rule and for pipelines that skip retraining when the data
and the config equal the champion's.
"""

from __future__ import annotations

from typing import Any

#: Version-tag prefix of the per-task validation-data fingerprints.
FINGERPRINT_TAG_PREFIX = "data_fingerprint."


def champion_info(version: Any) -> dict[str, Any]:
    """Score, metric, data fingerprints, config hash and tags of a ModelVersion."""
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
        "config_hash": tags.get("config_hash"),
        "git_commit": tags.get("git_commit"),
        "tags": tags,
    }
