"""The promotion rule: does a new version take the ``champion`` alias?

A small pure piece: no MLflow here. :func:`~multitask_bert.registry.registration.register` hands
it the champion's registered version (anything with ``.version`` and ``.tags``) and writes
what it decides.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from multitask_bert.registry.version_tags import champion_info


@dataclass
class PromotionDecision:
    """What :func:`decide_promotion` decided."""

    promote: bool
    """Whether ``champion`` moves to the new version."""
    reason: str
    """One sentence: why it was or was not promoted."""
    champion_score: float | None
    """The champion's score: the stored one on the same data, or the one rescored on the new
    data; its stored score when the two were not comparable; None when there was none."""


def decide_promotion(
    model_name: str,
    score: float,
    score_metric: str,
    fingerprints: dict[str, str],
    champion: Any,
    rescore_champion: Callable[[str], float] | None,
    higher_is_better: bool,
) -> PromotionDecision:
    """The new version is promoted when there is no champion, or when its score is at least
    the champion's on the same validation data.

    When the champion's data fingerprints and score metric equal the new ones, its stored
    score is used; otherwise ``rescore_champion(models:/<name>/<champion version>)`` gives
    its score on the new data. Without a rescorer the scores are not comparable and the new
    version is promoted, as it is when the rescored champion's score is not finite.

    Args:
        model_name: the registered model (for the champion's ``models:/`` URI).
        score: the new version's score.
        score_metric: the score's name.
        fingerprints: per task, the fingerprint of the validation data behind ``score``.
        champion: the champion's ModelVersion (``.version``, ``.tags``), or None.
        rescore_champion: scores a model URI on the new validation data, or None.
        higher_is_better: False for losses and errors.
    """
    metric = score_metric or "score"
    if champion is None:
        return PromotionDecision(
            True, f"promoted: no champion yet; score {score:.4g} ({metric})", None
        )
    info = champion_info(champion)
    label = f"champion v{champion.version}"
    same_data = info["data_fingerprints"] == fingerprints and info["score_metric"] == score_metric
    if same_data and info["score"] is not None and math.isfinite(info["score"]):
        champion_score, basis = info["score"], "same data"
    elif rescore_champion is not None:
        champion_score = float(rescore_champion(f"models:/{model_name}/{champion.version}"))
        basis = "champion rescored on the new data"
        if not math.isfinite(champion_score):
            return PromotionDecision(
                True, f"promoted: {label} rescored to {champion_score} on the new "
                      f"data; score {score:.4g} ({metric})", champion_score)
    else:
        return PromotionDecision(
            True,
            f"promoted: score {score:.4g} ({metric}) not comparable with {label}, which was "
            f"scored on other data or another metric (no rescore_champion given)",
            info["score"],
        )
    better_or_equal = score >= champion_score if higher_is_better else score <= champion_score
    if better_or_equal:
        sign = ">=" if higher_is_better else "<="
        return PromotionDecision(True, f"promoted: score {score:.4g} {sign} {label} "
                                       f"{champion_score:.4g} ({metric}, {basis})",
                                 champion_score)
    sign = "<" if higher_is_better else ">"
    return PromotionDecision(False, f"not promoted: score {score:.4g} {sign} {label} "
                                    f"{champion_score:.4g} ({metric}, {basis})", champion_score)
