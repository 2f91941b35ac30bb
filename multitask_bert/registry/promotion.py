"""The promotion rule: does a new version take the ``champion`` alias?

Two conditions, both on the same validation data: the new version's major score is at
least the champion's, and no head's major metric falls more than a margin (default one
point, :data:`DEFAULT_MAX_HEAD_REGRESSION`) below the champion's, so a model that gains on
one task by losing on another stays challenger.

A small pure piece: no MLflow here.
:func:`~multitask_bert.registry.registration.register` hands it the champion's registered
version (anything with ``.version`` and ``.tags``) and writes what it decides.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from multitask_bert.registry.version_tags import champion_info

#: The champion's scores on the new data: its major score, or ``(score, {"task/head": major
#: metric})`` when the rescorer also gives every head's major metric.
Rescored = float | tuple[float, dict[str, float]]

DEFAULT_MAX_HEAD_REGRESSION = 0.01
"""One point (of accuracy, F1, Pearson...) on a 0-1 scale."""


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
    regressed_heads: dict[str, dict[str, float]] = field(default_factory=dict)
    """Heads whose major metric fell more than the margin below the champion's:
    ``{"task/head": {"score", "champion", "delta"}}`` (empty when none did)."""


def decide_promotion(
    model_name: str,
    score: float,
    score_metric: str,
    fingerprints: dict[str, str],
    champion: Any,
    rescore_champion: Callable[[str], Rescored] | None,
    higher_is_better: bool,
    head_scores: Mapping[str, float] | None = None,
    max_head_regression: float = DEFAULT_MAX_HEAD_REGRESSION,
    lower_is_better_heads: Collection[str] = (),
) -> PromotionDecision:
    """The new version is promoted when there is no champion, or when, on the same
    validation data, its score is at least the champion's and none of its heads' major
    metrics is more than ``max_head_regression`` below the champion's.

    When the champion's data fingerprints and score metric equal the new ones, its stored
    scores (``score`` and the ``head_score.*`` tags) are used; otherwise (or when it has no
    per-head scores and ``head_scores`` is given) ``rescore_champion(models:/<name>/<champion
    version>)`` gives its scores on the new data. Without a rescorer the scores are not
    comparable and the new version is promoted, as it is when the rescored champion's
    score is not finite.

    Args:
        model_name: the registered model (for the champion's ``models:/`` URI).
        score: the new version's score.
        score_metric: the score's name.
        fingerprints: per task, the fingerprint of the validation data behind ``score``.
        champion: the champion's ModelVersion (``.version``, ``.tags``), or None.
        rescore_champion: scores a model URI on the new validation data (its score, or the
            score and ``{"task/head": major metric}``), or None.
        higher_is_better: False for losses and errors.
        head_scores: the new version's ``{"task/head": major metric}``; None: no head gate.
        max_head_regression: how far a head may fall below the champion's.
        lower_is_better_heads: heads whose major metric is an error (``mse``...).
    """
    metric = score_metric or "score"
    if champion is None:
        return PromotionDecision(
            True, f"promoted: no champion yet; score {score:.4g} ({metric})", None
        )
    info = champion_info(champion)
    label = f"champion v{champion.version}"
    same_data = info["data_fingerprints"] == fingerprints and info["score_metric"] == score_metric
    champion_heads: dict[str, float] = dict(info["head_scores"])
    need_heads = head_scores is not None and not champion_heads
    stored = same_data and info["score"] is not None and math.isfinite(info["score"])
    if stored and not (need_heads and rescore_champion is not None):
        champion_score, basis = info["score"], "same data"
    elif rescore_champion is not None:
        champion_score, champion_heads = _rescored(
            rescore_champion(f"models:/{model_name}/{champion.version}"))
        basis = ("same data, champion rescored for its per-head scores" if stored
                 else "champion rescored on the new data")
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
    regressed = _regressed_heads(head_scores or {}, champion_heads, max_head_regression,
                                 set(lower_is_better_heads))
    better_or_equal = score >= champion_score if higher_is_better else score <= champion_score
    sign = (">=" if higher_is_better else "<=") if better_or_equal else (
        "<" if higher_is_better else ">")
    comparison = f"score {score:.4g} {sign} {label} {champion_score:.4g} ({metric}, {basis})"
    gate = _head_gate_text(head_scores, champion_heads, regressed, max_head_regression, label)
    if better_or_equal and not regressed:
        return PromotionDecision(True, f"promoted: {comparison}{gate}", champion_score)
    joiner = "; and" if not better_or_equal else ", but"
    return PromotionDecision(False, f"not promoted: {comparison}"
                                    f"{joiner + gate[1:] if regressed else gate}",
                             champion_score, regressed)


def _rescored(value: Rescored) -> tuple[float, dict[str, float]]:
    if isinstance(value, tuple):
        score, heads = value
        return float(score), {str(k): float(v) for k, v in heads.items()}
    return float(value), {}


def _regressed_heads(new: Mapping[str, float], champion: Mapping[str, float], margin: float,
                     lower_is_better: set[str]) -> dict[str, dict[str, float]]:
    regressed = {}
    for head, value in new.items():
        old = champion.get(head)
        if old is None or not math.isfinite(old) or not math.isfinite(value):
            continue  # a head the champion did not have: nothing to fall from
        delta = value - old
        fell = -delta if head not in lower_is_better else delta
        if fell > margin + 1e-12:
            regressed[head] = {"score": value, "champion": old, "delta": delta}
    return regressed


def _head_gate_text(new: Mapping[str, float] | None, champion: Mapping[str, float],
                    regressed: dict[str, dict[str, float]], margin: float, label: str) -> str:
    """What the per-head gate found, as the end of the decision's sentence."""
    if new is None:
        return ""
    if not champion:
        return f"; per-head gate not applied: {label} has no per-head scores"
    if not regressed:
        return f"; no head fell more than {margin:.4g} below {label}"
    worst = sorted(regressed.items(), key=lambda item: -abs(item[1]["delta"]))
    heads = ", ".join(f"{head} {r['score']:.4f} vs {r['champion']:.4f} ({r['delta']:+.4f})"
                      for head, r in worst)
    count = f"{len(regressed)} head{'s' if len(regressed) > 1 else ''}"
    return f"; {count} fell more than {margin:.4g} below {label}: {heads}"
