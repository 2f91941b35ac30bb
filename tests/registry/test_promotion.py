"""The promotion rule alone: champions are plain objects with ``.version`` and ``.tags``."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from multitask_bert.registry.promotion import PromotionDecision, decide_promotion

DATA = {"tagging": "fp-tag-1", "review": "fp-rev-1"}


def _champion(score: float | str | None, data: dict[str, str] = DATA, metric: str = "mean",
              version: str = "3") -> SimpleNamespace:
    tags = {"score_metric": metric, **{f"data_fingerprint.{t}": v for t, v in data.items()}}
    if score is not None:
        tags["score"] = repr(score) if isinstance(score, float) else score
    return SimpleNamespace(version=version, tags=tags)


def _decide(score: float, champion: SimpleNamespace | None, data: dict[str, str] = DATA,
            rescore=None, higher_is_better: bool = True, metric: str = "mean"
            ) -> PromotionDecision:
    return decide_promotion("model", score, metric, data, champion, rescore, higher_is_better)


def _never_called(model_uri: str) -> float:
    raise AssertionError(f"rescored {model_uri} although the data did not change")


def test_no_champion_promotes():
    decision = _decide(0.8, None)
    assert decision == PromotionDecision(True, "promoted: no champion yet; score 0.8 (mean)",
                                         None)


def test_no_champion_and_no_metric_name_says_score():
    assert _decide(0.8, None, metric="").reason == "promoted: no champion yet; score 0.8 (score)"


@pytest.mark.parametrize(
    ("score", "promote", "reason"),
    [
        (0.9, True, "promoted: score 0.9 >= champion v3 0.8 (mean, same data)"),
        (0.8, True, "promoted: score 0.8 >= champion v3 0.8 (mean, same data)"),
        (0.71, False, "not promoted: score 0.71 < champion v3 0.8 (mean, same data)"),
    ],
)
def test_same_data_compares_the_stored_scores(score, promote, reason):
    decision = _decide(score, _champion(0.8), rescore=_never_called)
    assert decision == PromotionDecision(promote, reason, 0.8)


@pytest.mark.parametrize(
    ("score", "promote", "reason"),
    [
        (0.4, True, "promoted: score 0.4 <= champion v3 0.5 (mean, same data)"),
        (0.5, True, "promoted: score 0.5 <= champion v3 0.5 (mean, same data)"),
        (0.6, False, "not promoted: score 0.6 > champion v3 0.5 (mean, same data)"),
    ],
)
def test_lower_is_better_promotes_the_smaller_score(score, promote, reason):
    decision = _decide(score, _champion(0.5), higher_is_better=False)
    assert decision == PromotionDecision(promote, reason, 0.5)


@pytest.mark.parametrize(
    "champion",
    [
        _champion(0.8, data={"tagging": "fp-tag-2", "review": "fp-rev-1"}),  # other data
        _champion(0.8, data={"tagging": "fp-tag-1"}),  # fewer tasks
        _champion(0.8, metric="tagging/ner/f1"),  # another metric
        _champion(None),  # no stored score
        _champion("not-a-number"),
        _champion(math.nan),
    ],
    ids=["other-data", "fewer-tasks", "other-metric", "no-score", "bad-score", "nan-score"],
)
def test_incomparable_champions_are_rescored_on_the_new_data(champion):
    calls: list[str] = []

    def rescore(model_uri: str) -> float:
        calls.append(model_uri)
        return 0.7

    promoted = _decide(0.75, champion, rescore=rescore)
    assert calls == ["models:/model/3"]
    assert promoted == PromotionDecision(
        True, "promoted: score 0.75 >= champion v3 0.7 (mean, champion rescored on the new data)",
        0.7)
    kept = _decide(0.69, champion, rescore=rescore)
    assert kept == PromotionDecision(
        False,
        "not promoted: score 0.69 < champion v3 0.7 (mean, champion rescored on the new data)",
        0.7)


def test_rescored_lower_is_better():
    decision = _decide(0.6, _champion(0.1, data={"tagging": "new"}), rescore=lambda uri: 0.5,
                       higher_is_better=False)
    assert decision == PromotionDecision(
        False, "not promoted: score 0.6 > champion v3 0.5 (mean, champion rescored on the new "
               "data)", 0.5)


def test_other_data_without_a_rescorer_promotes_and_says_why():
    decision = _decide(0.5, _champion(0.9, data={"tagging": "other"}))
    assert decision == PromotionDecision(
        True,
        "promoted: score 0.5 (mean) not comparable with champion v3, which was scored on "
        "other data or another metric (no rescore_champion given)",
        0.9,  # the stored score, for the record
    )


@pytest.mark.parametrize("rescored", [math.nan, math.inf, -math.inf])
def test_a_non_finite_rescored_champion_loses(rescored):
    decision = _decide(0.1, _champion(0.9, data={"tagging": "other"}),
                       rescore=lambda uri: rescored)
    assert decision.promote
    assert decision.reason == (f"promoted: champion v3 rescored to {rescored} on the new data; "
                               f"score 0.1 (mean)")
    assert decision.champion_score is not None and not math.isfinite(decision.champion_score)


def test_a_failing_rescorer_propagates():
    def rescore(model_uri: str) -> float:
        raise RuntimeError("evaluation crashed")

    with pytest.raises(RuntimeError, match="evaluation crashed"):
        _decide(0.9, _champion(0.8, data={"tagging": "new"}), rescore=rescore)


# -- the per-head gate ---------------------------------------------------------------------
HEADS = {"sst2/sentiment": 0.90, "conll/ner": 0.85}


def _with_heads(score: float, heads: dict[str, float], **kwargs) -> SimpleNamespace:
    champion = _champion(score, **kwargs)
    champion.tags.update({f"head_score.{h}": repr(v) for h, v in heads.items()})
    return champion


def _gate(score: float, heads: dict[str, float], champion, margin: float = 0.01, rescore=None,
          lower: tuple[str, ...] = ()) -> PromotionDecision:
    return decide_promotion("model", score, "mean", DATA, champion, rescore, True,
                            head_scores=heads, max_head_regression=margin,
                            lower_is_better_heads=lower)


def test_a_better_mean_that_loses_a_head_by_more_than_the_margin_is_not_promoted():
    # +2 points on SST-2, -3 on NER: the mean rises, NER falls 3 points > 1
    new = {"sst2/sentiment": 0.92, "conll/ner": 0.82}
    decision = _gate(0.87, new, _with_heads(0.875 - 0.0, HEADS), rescore=_never_called)
    assert not decision.promote
    assert decision.regressed_heads == {
        "conll/ner": {"score": 0.82, "champion": 0.85, "delta": pytest.approx(-0.03)}}
    assert decision.reason == (
        "not promoted: score 0.87 < champion v3 0.875 (mean, same data); and 1 head fell "
        "more than 0.01 below champion v3: conll/ner 0.8200 vs 0.8500 (-0.0300)")

    better_mean = _gate(0.88, new, _with_heads(0.875, HEADS), rescore=_never_called)
    assert not better_mean.promote and set(better_mean.regressed_heads) == {"conll/ner"}
    assert better_mean.reason.startswith(
        "not promoted: score 0.88 >= champion v3 0.875 (mean, same data), but 1 head fell "
        "more than 0.01 below champion v3: conll/ner 0.8200 vs 0.8500 (-0.0300)")


def test_a_head_within_the_margin_does_not_block_promotion():
    new = {"sst2/sentiment": 0.93, "conll/ner": 0.8401}  # NER -0.0099: within 1 point
    decision = _gate(0.88, new, _with_heads(0.875, HEADS))
    assert decision.promote and decision.regressed_heads == {}
    assert decision.reason == ("promoted: score 0.88 >= champion v3 0.875 (mean, same data); "
                               "no head fell more than 0.01 below champion v3")
    assert not _gate(0.88, new, _with_heads(0.875, HEADS), margin=0.005).promote


def test_lower_is_better_heads_regress_upwards():
    champion = _with_heads(0.5, {"sts/score": 0.30})
    assert not _gate(0.6, {"sts/score": 0.35}, champion, lower=("sts/score",)).promote
    assert _gate(0.6, {"sts/score": 0.25}, champion, lower=("sts/score",)).promote


def test_a_champion_without_per_head_scores_is_rescored_for_them():
    calls = []

    def rescore(uri: str):
        calls.append(uri)
        return 0.875, HEADS

    decision = _gate(0.88, {"sst2/sentiment": 0.95, "conll/ner": 0.80}, _champion(0.875),
                     rescore=rescore)
    assert calls == ["models:/model/3"] and not decision.promote
    assert "(mean, same data, champion rescored for its per-head scores)" in decision.reason
    without_rescorer = _gate(0.88, {"conll/ner": 0.5}, _champion(0.875))
    assert without_rescorer.promote
    assert without_rescorer.reason.endswith(
        "per-head gate not applied: champion v3 has no per-head scores")


def test_changed_data_rescores_heads_too():
    new = {"sst2/sentiment": 0.95, "conll/ner": 0.80}
    other = _with_heads(0.9, HEADS, data={"sst2": "old"})
    decision = _gate(0.88, new, other, rescore=lambda uri: (0.86, {"conll/ner": 0.82}))
    assert not decision.promote and decision.champion_score == 0.86
    assert decision.regressed_heads["conll/ner"]["champion"] == 0.82
