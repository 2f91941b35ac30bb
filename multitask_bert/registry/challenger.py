"""Promoting a version that is already registered: the champion rule, applied later.

A sweep registers each trial as a challenger only (``register(..., promote=False)``); once it
knows its best trial, :func:`promote_version` gives that version the ``challenger`` alias and
decides, with the same rule as a fresh registration
(:func:`~multitask_bert.registry.promotion.decide_promotion`, on the version's own score,
metric and data fingerprint tags), whether ``champion`` moves to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from multitask_bert.registry.aliases import CHALLENGER, CHAMPION
from multitask_bert.registry.lookup import champion_model_version
from multitask_bert.registry.promotion import (
    DEFAULT_MAX_HEAD_REGRESSION,
    Rescored,
    decide_promotion,
)
from multitask_bert.registry.registration import RegistrationResult
from multitask_bert.registry.store import mlflow_store, registry_client
from multitask_bert.registry.version_tags import champion_info
from multitask_bert.tracking import redact_uri

logger = logging.getLogger("multitask_bert.registry")


def promote_version(
    tracking_uri: str,
    model_name: str,
    version: str,
    *,
    rescore_champion: Callable[[str], Rescored] | None = None,
    higher_is_better: bool = True,
    lower_is_better_heads: Collection[str] = (),
) -> RegistrationResult:
    """Set ``challenger`` on ``version`` and move ``champion`` to it when the rule says so.

    Args:
        tracking_uri: the MLflow store and registry.
        model_name: the registered model.
        version: the version to promote (registered with its ``score`` tags).
        rescore_champion: scores a model URI on the version's validation data when the
            champion was scored on other data (see
            :func:`~multitask_bert.registry.promotion.decide_promotion`).
        higher_is_better: False for losses and errors.
        lower_is_better_heads: heads whose major metric is an error (the per-head gate reads
            the version's ``head_score.*`` tags and its ``max_head_regression`` tag).

    Raises:
        ValueError: the version has no finite ``score`` tag (it was not registered by
            :func:`~multitask_bert.registry.registration.register`).
    """
    version = str(version)
    with mlflow_store(tracking_uri):
        client = registry_client(tracking_uri)
        candidate = client.get_model_version(model_name, version)
        info = champion_info(candidate)
        if info["score"] is None:
            raise ValueError(f"{model_name} v{version} has no score tag; register it with "
                             "multitask_bert.registry.register first")
        champion = champion_model_version(client, model_name)
        if champion is not None and str(champion.version) == version:
            reason = f"already champion: v{version}"
            promote, champion_score = True, info["score"]
        else:
            try:
                margin = float(info["tags"].get("max_head_regression",
                                                DEFAULT_MAX_HEAD_REGRESSION))
            except ValueError:
                margin = DEFAULT_MAX_HEAD_REGRESSION
            decision = decide_promotion(model_name, info["score"], info["score_metric"],
                                        info["data_fingerprints"], champion, rescore_champion,
                                        higher_is_better, head_scores=info["head_scores"],
                                        max_head_regression=margin,
                                        lower_is_better_heads=lower_is_better_heads)
            promote, reason, champion_score = (decision.promote, decision.reason,
                                               decision.champion_score)
            client.set_model_version_tag(model_name, version, "promoted",
                                         "true" if promote else "false")
            client.set_model_version_tag(model_name, version, "not_promoted_reason"
                                         if not promote else "promoted_reason", reason)
        client.set_registered_model_alias(model_name, CHALLENGER, version)
        if promote:
            client.set_registered_model_alias(model_name, CHAMPION, version)
        aliases = sorted(client.get_model_version(model_name, version).aliases)
        now = champion_model_version(client, model_name)
    logger.info("%s v%s at %s: %s", model_name, version, redact_uri(tracking_uri), reason)
    return RegistrationResult(
        model_name=model_name, version=version, aliases=aliases, promoted=promote,
        reason=reason, champion_version=str(now.version) if now is not None else None,
        champion_score=champion_score, score=info["score"], score_metric=info["score_metric"],
        model_uri=f"models:/{model_name}/{version}")
