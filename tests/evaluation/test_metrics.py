"""Tests for the pure metric functions, against hand-computed values."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
from scipy import stats
from seqeval.metrics import classification_report as seqeval_report
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.metrics import precision_score as seqeval_precision
from seqeval.metrics import recall_score as seqeval_recall
from seqeval.scheme import IOB2
from sklearn import metrics as skm

from multitask_bert.evaluation.metrics import (
    compute_classification_metrics,
    compute_multilabel_metrics,
    compute_ner_metrics,
    compute_regression_metrics,
    compute_tagging_accuracy,
    confusion_matrix,
)


def assert_plain_floats(result: dict) -> None:
    """Every leaf is a built-in float (or int support), never a numpy scalar, and JSON works."""
    for key, value in result.items():
        if isinstance(value, dict):
            assert_plain_floats(value)
        elif key == "support":
            assert type(value) is int, (key, type(value))
        else:
            assert type(value) is float, (key, type(value))
    json.dumps(result)


# --- classification --------------------------------------------------------------------

SENTIMENT = ["neg", "neu", "pos"]


def test_classification_absent_label_counts_as_zero_in_macro():
    # "neu" (id 1) is neither gold nor predicted in this split.
    y_true = [0, 0, 2, 2, 2]
    y_pred = [0, 2, 2, 2, 0]
    # neg: tp=1 (i0), fp=1 (i4), fn=1 (i1) -> P=1/2 R=1/2 F1=1/2
    # neu: tp=fp=fn=0                       -> 0, 0, 0 (zero_division=0)
    # pos: tp=2 (i2,i3), fp=1 (i1), fn=1 (i4) -> P=2/3 R=2/3 F1=2/3
    # macro F1 = (1/2 + 0 + 2/3) / 3 = 7/18; ignoring "neu" would give 7/12.
    result = compute_classification_metrics(y_true, y_pred, SENTIMENT)
    assert result["macro_f1"] == pytest.approx(7 / 18)
    assert result["macro_precision"] == pytest.approx(7 / 18)
    assert result["macro_recall"] == pytest.approx(7 / 18)
    assert result["macro_f1"] != pytest.approx(7 / 12)
    # 3 of 5 right; micro over all labels equals accuracy for single-label data.
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["micro_f1"] == pytest.approx(3 / 5)
    assert result["micro_precision"] == pytest.approx(3 / 5)
    assert result["micro_recall"] == pytest.approx(3 / 5)
    assert_plain_floats(result)


def test_classification_precision_and_recall_differ():
    y_true = [0, 0, 0, 1, 2]
    y_pred = [0, 1, 1, 1, 1]
    # a: tp=1 fp=0 fn=2 -> P=1   R=1/3 F1=2/(2+0+2)=1/2
    # b: tp=1 fp=3 fn=0 -> P=1/4 R=1   F1=2/(2+3+0)=2/5
    # c: tp=0 fp=0 fn=1 -> 0, 0, 0
    # macro P=(1+1/4+0)/3=5/12  R=(1/3+1+0)/3=4/9  F1=(1/2+2/5+0)/3=3/10; acc=2/5
    result = compute_classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert result["macro_precision"] == pytest.approx(5 / 12)
    assert result["macro_recall"] == pytest.approx(4 / 9)
    assert result["macro_f1"] == pytest.approx(3 / 10)
    assert result["accuracy"] == pytest.approx(2 / 5)


def test_classification_matches_sklearn_with_full_label_list():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, size=60)  # label 4 never appears in gold
    y_pred = rng.integers(0, 5, size=60)
    labels = list(range(5))
    result = compute_classification_metrics(y_true, y_pred, ["l0", "l1", "l2", "l3", "l4"])
    for avg in ("macro", "micro"):
        kwargs = {"labels": labels, "average": avg, "zero_division": 0}
        assert result[f"{avg}_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, **kwargs))
        assert result[f"{avg}_precision"] == pytest.approx(
            skm.precision_score(y_true, y_pred, **kwargs)
        )
        assert result[f"{avg}_recall"] == pytest.approx(
            skm.recall_score(y_true, y_pred, **kwargs)
        )
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))


def test_classification_perfect_and_numpy_input():
    result = compute_classification_metrics(np.array([1, 0]), np.array([1, 0]), ["a", "b"])
    assert result["accuracy"] == 1.0
    assert result["macro_f1"] == 1.0
    assert_plain_floats(result)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "match"),
    [
        ([], [], "empty"),
        ([0, 1], [0], "2 items"),
        ([0, 3], [0, 1], "label id 3"),
        ([0, 1], [0, -1], "label id -1"),
        ([0.0, 1.0], [0, 1], "integer"),
    ],
)
def test_classification_invalid_input(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        compute_classification_metrics(y_true, y_pred, SENTIMENT)


def test_confusion_matrix_rows_are_true_labels():
    # pairs (t,p): (0,0) (0,2) (2,2) (2,2) (2,0)
    assert confusion_matrix([0, 0, 2, 2, 2], [0, 2, 2, 2, 0], 3) == [
        [1, 0, 1],
        [0, 0, 0],
        [1, 0, 2],
    ]
    matrix = confusion_matrix([1], [0], 2)
    assert matrix == [[0, 0], [1, 0]]
    assert type(matrix[1][0]) is int


# --- NER ----------------------------------------------------------------------------------

IOB1_GOLD = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]  # PER(0,2) LOC(3,4) LOC(4,5)


def test_ner_iob1_perfect_keeps_all_three_entities():
    result = compute_ner_metrics([IOB1_GOLD], [IOB1_GOLD], "IOB1")
    assert result["f1"] == 1.0
    assert result["per_type"] == {
        "LOC": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2},
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
    }


def test_naive_strict_iob2_on_raw_iob1_loses_entities():
    # Strict IOB2 only starts entities at B-: raw IOB1 loses PER(0,2) and LOC(3,4).
    naive = seqeval_report(
        [IOB1_GOLD], [IOB1_GOLD], mode="strict", scheme=IOB2, output_dict=True, zero_division=0
    )
    assert "PER" not in naive
    assert naive["micro avg"]["support"] == 1
    ours = compute_ner_metrics([IOB1_GOLD], [IOB1_GOLD], "IOB1")
    assert sum(row["support"] for row in ours["per_type"].values()) == 3


def test_ner_iob1_hand_computed_errors():
    gold = [IOB1_GOLD, ["I-ORG", "O", "I-PER"]]
    pred = [["I-PER", "I-PER", "O", "I-LOC", "I-LOC"], ["I-ORG", "O", "I-LOC"]]
    # gold: s1 PER(0,2) LOC(3,4) LOC(4,5); s2 ORG(0,1) PER(2,3)      -> 5 entities
    # pred: s1 PER(0,2) LOC(3,5);          s2 ORG(0,1) LOC(2,3)      -> 4 entities
    # correct: s1 PER(0,2), s2 ORG(0,1) -> tp=2; LOC(3,5) matches neither gold LOC.
    # P=2/4  R=2/5  F1=2*2/(4+5)=4/9
    # PER: gold 2, pred 1, tp 1 -> P=1 R=1/2 F1=2/3
    # LOC: gold 2, pred 2, tp 0 -> 0
    # ORG: gold 1, pred 1, tp 1 -> 1
    # word accuracy: s1 4/5 (last tag differs), s2 2/3 -> 6/8
    result = compute_ner_metrics(gold, pred, "IOB1")
    assert result["precision"] == pytest.approx(1 / 2)
    assert result["recall"] == pytest.approx(2 / 5)
    assert result["f1"] == pytest.approx(4 / 9)
    assert result["accuracy"] == pytest.approx(6 / 8)
    per_type = result["per_type"]
    assert per_type["PER"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    assert per_type["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert per_type["ORG"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert_plain_floats(result)


def test_ner_accuracy_uses_original_tags():
    # IOB1 I-PER and B-PER at sentence start are the same entity but different tags.
    result = compute_ner_metrics([["I-PER", "O"]], [["B-PER", "O"]], "IOB1")
    assert result["f1"] == 1.0
    assert result["accuracy"] == pytest.approx(1 / 2)


def test_ner_per_type_includes_predicted_only_types():
    # gold PER(0,1); pred PER(0,1) MISC(1,2) -> tp=1, P=1/2, R=1, F1=2/3
    result = compute_ner_metrics([["B-PER", "O"]], [["B-PER", "B-MISC"]], "IOB2")
    assert result["precision"] == pytest.approx(1 / 2)
    assert result["recall"] == 1.0
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["per_type"]["MISC"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }


def test_ner_iob2_lenient_i_after_o():
    # gold B-PER I-PER; pred I-PER I-PER -> lenient: same span PER(0,2), a hit.
    result = compute_ner_metrics([["B-PER", "I-PER"]], [["I-PER", "I-PER"]], "IOB2")
    assert result["f1"] == 1.0
    assert result["accuracy"] == pytest.approx(1 / 2)


def test_ner_bioes_hand_computed():
    gold = [["B-PER", "E-PER", "S-LOC"]]  # PER(0,2) LOC(2,3)
    pred = [["S-PER", "S-PER", "S-LOC"]]  # PER(0,1) PER(1,2) LOC(2,3)
    # tp=1 (LOC); P=1/3 R=1/2 F1=2*1/(3+2)=2/5; word accuracy 1/3
    result = compute_ner_metrics(gold, pred, "BIOES")
    assert result["precision"] == pytest.approx(1 / 3)
    assert result["recall"] == pytest.approx(1 / 2)
    assert result["f1"] == pytest.approx(2 / 5)
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["per_type"]["PER"]["support"] == 1
    assert result["per_type"]["PER"]["precision"] == 0.0


def test_ner_no_entities_anywhere_is_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compute_ner_metrics([["O", "O"]], [["O", "O"]], "IOB2")
    assert result == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 1.0, "per_type": {}}


def test_ner_empty_sentence_among_others():
    result = compute_ner_metrics([[], ["B-PER"]], [[], ["B-PER"]], "IOB2")
    assert result["f1"] == 1.0
    assert result["accuracy"] == 1.0


@pytest.mark.parametrize("scheme", ["IOB1", "IOB2", "BIOES"])
def test_ner_matches_seqeval_conlleval_mode_on_random_data(scheme):
    # seqeval's default mode follows conlleval's lenient chunking; ours must agree.
    prefixes = "BI" if scheme != "BIOES" else "BIES"
    vocab = ["O", "O", "O"] + [f"{p}-{t}" for p in prefixes for t in ("PER", "LOC", "ORG")]
    rng = random.Random(1)
    gold, pred = [], []
    for _ in range(40):
        n = rng.randint(1, 10)
        gold.append([rng.choice(vocab) for _ in range(n)])
        pred.append([g if rng.random() < 0.6 else rng.choice(vocab) for g in gold[-1]])
    result = compute_ner_metrics(gold, pred, scheme)
    assert result["precision"] == pytest.approx(seqeval_precision(gold, pred))
    assert result["recall"] == pytest.approx(seqeval_recall(gold, pred))
    assert result["f1"] == pytest.approx(seqeval_f1(gold, pred))


def test_ner_unequal_lengths_name_the_index():
    with pytest.raises(ValueError, match="sequence 1"):
        compute_ner_metrics([["O"], ["B-PER", "O"]], [["O"], ["B-PER"]], "IOB2")
    with pytest.raises(ValueError, match="2 sequences"):
        compute_ner_metrics([["O"], ["O"]], [["O"]], "IOB2")


def test_ner_invalid_tag_and_scheme():
    with pytest.raises(ValueError, match="'PER'"):
        compute_ner_metrics([["B-PER"]], [["PER"]], "IOB2")
    with pytest.raises(ValueError, match="unknown tag scheme"):
        compute_ner_metrics([["B-PER"]], [["B-PER"]], "iob3")
    with pytest.raises(ValueError, match="empty"):
        compute_ner_metrics([[]], [[]], "IOB2")


# --- tagging accuracy -----------------------------------------------------------------------


def test_tagging_accuracy_hand_computed():
    gold = [["DET", "NOUN", "VERB"], ["NOUN"]]
    pred = [["DET", "VERB", "VERB"], ["NOUN"]]
    # 3 of 4 words right
    result = compute_tagging_accuracy(gold, pred)
    assert result == {"accuracy": pytest.approx(3 / 4)}
    assert_plain_floats(result)


def test_tagging_accuracy_errors():
    with pytest.raises(ValueError, match="sequence 0"):
        compute_tagging_accuracy([["A", "B"]], [["A"]])
    with pytest.raises(ValueError, match="empty"):
        compute_tagging_accuracy([], [])


# --- regression -------------------------------------------------------------------------------


def test_regression_hand_computed():
    y_true = [1.0, 2.0, 3.0, 4.0]
    y_pred = [1.0, 3.0, 2.0, 10.0]
    # pearson: dev_true=(-1.5,-.5,.5,1.5), dev_pred=(-3,-1,-2,6) (mean 4)
    #   cov sum = 4.5+.5-1+9 = 13; ss_true=5, ss_pred=50 -> r = 13/sqrt(250)
    # spearman: ranks (1,2,3,4) vs (1,3,2,4): devs (-1.5,.5,-.5,1.5) -> 4/5 = 0.8
    # errors (0,1,-1,6): mse = 38/4 = 9.5, mae = 8/4 = 2
    result = compute_regression_metrics(y_true, y_pred)
    assert result["pearson"] == pytest.approx(13 / np.sqrt(250))
    assert result["spearman"] == pytest.approx(0.8)
    assert result["mse"] == pytest.approx(9.5)
    assert result["mae"] == pytest.approx(2.0)
    assert_plain_floats(result)


def test_regression_matches_scipy_on_random_data():
    rng = np.random.default_rng(0)
    y_true = rng.normal(size=50)
    y_pred = y_true + rng.normal(scale=0.7, size=50)
    result = compute_regression_metrics(y_true.tolist(), y_pred.tolist())
    assert result["pearson"] == pytest.approx(stats.pearsonr(y_true, y_pred).statistic)
    assert result["spearman"] == pytest.approx(stats.spearmanr(y_true, y_pred).statistic)
    assert result["mse"] == pytest.approx(np.mean((y_true - y_pred) ** 2))
    assert 0.3 < result["pearson"] < 1.0


def test_regression_constant_input_gives_zero_correlation_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compute_regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
        flat_gold = compute_regression_metrics([5.0, 5.0], [1.0, 2.0])
        single = compute_regression_metrics([1.0], [3.0])
    # errors (1,0,-1): mse = 2/3, mae = 2/3
    assert result == {
        "pearson": 0.0,
        "spearman": 0.0,
        "mse": pytest.approx(2 / 3),
        "mae": pytest.approx(2 / 3),
    }
    assert flat_gold["pearson"] == 0.0 and flat_gold["spearman"] == 0.0
    assert single["pearson"] == 0.0 and single["mse"] == pytest.approx(4.0)


def test_regression_anticorrelated():
    result = compute_regression_metrics([1, 2, 3], [3, 2, 1])
    assert result["pearson"] == pytest.approx(-1.0)
    assert result["spearman"] == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "match"),
    [([], [], "empty"), ([1.0, 2.0], [1.0], "2 items"), ([1.0, float("nan")], [1.0, 2.0], "NaN")],
)
def test_regression_invalid_input(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        compute_regression_metrics(y_true, y_pred)


# --- multilabel ---------------------------------------------------------------------------------

TOPICS = ["a", "b", "c", "d"]


def test_multilabel_hand_computed():
    y_true = [[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0]]
    y_pred = [[1, 0, 0, 0], [0, 1, 1, 1], [1, 1, 0, 0]]
    # a: tp=2 fp=0 fn=0 -> 1,1,1     b: tp=2 fp=0 fn=0 -> 1,1,1
    # c: tp=0 fp=1 fn=1 -> 0,0,0     d: tp=0 fp=1 fn=0 -> 0,0,0 (never gold)
    # micro: tp=4 fp=2 fn=1 -> P=4/6 R=4/5 F1=2*4/(8+2+1)=8/11
    # macro (over all 4 labels): P=R=F1=(1+1+0+0)/4=1/2
    # subset: only row 2 exact -> 1/3; hamming: 3 wrong cells of 12 -> 9/12
    result = compute_multilabel_metrics(y_true, y_pred, TOPICS)
    assert result["micro_precision"] == pytest.approx(2 / 3)
    assert result["micro_recall"] == pytest.approx(4 / 5)
    assert result["micro_f1"] == pytest.approx(8 / 11)
    assert result["macro_f1"] == pytest.approx(1 / 2)
    assert result["macro_precision"] == pytest.approx(1 / 2)
    assert result["macro_recall"] == pytest.approx(1 / 2)
    assert result["subset_accuracy"] == pytest.approx(1 / 3)
    assert result["hamming_accuracy"] == pytest.approx(3 / 4)
    assert_plain_floats(result)


def test_multilabel_matches_sklearn():
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 2, size=(30, 5))
    y_true[:, 4] = 0  # a label absent from gold
    y_pred = rng.integers(0, 2, size=(30, 5))
    result = compute_multilabel_metrics(y_true, y_pred, list("abcde"))
    for avg in ("macro", "micro"):
        expected = skm.f1_score(y_true, y_pred, average=avg, zero_division=0)
        assert result[f"{avg}_f1"] == pytest.approx(expected)
    assert result["subset_accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert result["hamming_accuracy"] == pytest.approx(1 - skm.hamming_loss(y_true, y_pred))


@pytest.mark.parametrize(
    ("y_true", "y_pred", "match"),
    [
        ([], [], "empty"),
        ([[1, 0, 0]], [[1, 0, 0, 0]], "width 4"),
        ([[1, 0, 0, 2]], [[1, 0, 0, 0]], "0/1"),
        ([[1, 0, 0, 0]], [[1, 0, 0, 0], [0, 0, 0, 0]], "rows"),
    ],
)
def test_multilabel_invalid_input(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        compute_multilabel_metrics(y_true, y_pred, TOPICS)
