"""Pure metric functions for every head type; no torch.

Every function returns plain Python floats (never numpy scalars), so results can be
JSON-serialised and logged as ``task/head/metric`` directly. Precision, recall and F1 use
scikit-learn's ``zero_division=0`` convention: a ratio whose denominator is zero is 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from multitask_bert.evaluation.tag_schemes import check_scheme, to_iob2

NerMetrics = dict[str, float | dict[str, dict[str, float]]]


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ``numerator / denominator`` with 0.0 where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _precision_recall_f1(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-entry precision, recall and F1 from counts, with ``zero_division=0``."""
    precision = _safe_divide(tp, tp + fp)
    recall = _safe_divide(tp, tp + fn)
    f1 = _safe_divide(2 * tp, 2 * tp + fp + fn)  # = 2PR/(P+R), and 0 when P+R=0
    return precision, recall, f1


def _label_ids(values: Sequence[int], num_labels: int, name: str) -> np.ndarray:
    ids = np.asarray(values)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of label ids, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must hold integer label ids, got dtype {ids.dtype}")
    bad = ids[(ids < 0) | (ids >= num_labels)]
    if bad.size:
        raise ValueError(f"{name} holds label id {int(bad[0])} outside [0, {num_labels})")
    return ids.astype(np.int64)


def confusion_matrix(
    y_true: Sequence[int], y_pred: Sequence[int], num_labels: int
) -> list[list[int]]:
    """Counts (true, predicted) label-id pairs.

    Args:
        y_true: Gold label ids.
        y_pred: Predicted label ids, same length.
        num_labels: Size of the label vocabulary; ids must lie in ``[0, num_labels)``.

    Returns:
        A ``num_labels x num_labels`` list of lists; ``matrix[t][p]`` counts examples with
        gold ``t`` predicted as ``p`` (rows are true labels).

    Raises:
        ValueError: On different lengths or an id out of range.
    """
    true_ids = _label_ids(y_true, num_labels, "y_true")
    pred_ids = _label_ids(y_pred, num_labels, "y_pred")
    if len(true_ids) != len(pred_ids):
        raise ValueError(f"y_true has {len(true_ids)} items but y_pred has {len(pred_ids)}")
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (true_ids, pred_ids), 1)
    return matrix.tolist()


def compute_classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: list[str]
) -> dict[str, float]:
    """Scores single-label classification.

    Macro averages run over the FULL label vocabulary (every id in ``range(len(labels))``),
    including labels absent from this split: a label with no gold examples and no
    predictions has precision, recall and F1 of 0 (scikit-learn ``zero_division=0``) and
    still counts in the mean, so macro scores are comparable across splits. Micro scores
    over all labels equal accuracy for single-label data; they are reported for symmetry.

    Args:
        y_true: Gold label ids, indexes into ``labels``.
        y_pred: Predicted label ids, same length.
        labels: The full label vocabulary.

    Returns:
        ``accuracy``, ``micro_f1``, ``micro_precision``, ``micro_recall``, ``macro_f1``,
        ``macro_precision``, ``macro_recall``.

    Raises:
        ValueError: On empty input, different lengths, an empty vocabulary or an id out of
            range.
    """
    if not labels:
        raise ValueError("labels is empty")
    if len(y_true) == 0:
        raise ValueError("cannot score an empty split: y_true is empty")
    matrix = np.asarray(confusion_matrix(y_true, y_pred, len(labels)), dtype=np.int64)
    tp = np.diag(matrix)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    return {"accuracy": float(tp.sum() / matrix.sum()), **_micro_macro(tp, fp, fn)}


def _check_tag_pairs(true_tags: list[list[str]], pred_tags: list[list[str]]) -> int:
    """Checks sentence-aligned tag sequences and returns the total word count."""
    if len(true_tags) != len(pred_tags):
        raise ValueError(
            f"true_tags has {len(true_tags)} sequences but pred_tags has {len(pred_tags)}"
        )
    for i, (gold, pred) in enumerate(zip(true_tags, pred_tags, strict=False)):
        if len(gold) != len(pred):
            raise ValueError(
                f"sequence {i}: {len(gold)} gold tags but {len(pred)} predicted tags"
            )
    num_words = sum(len(gold) for gold in true_tags)
    if num_words == 0:
        raise ValueError("cannot score an empty split: no tags in true_tags")
    return num_words


def compute_tagging_accuracy(
    true_tags: list[list[str]], pred_tags: list[list[str]]
) -> dict[str, float]:
    """Scores word-level tagging (e.g. POS) by the fraction of words tagged exactly right.

    Raises:
        ValueError: On different sequence counts, a pair of different lengths (the message
            names its index) or no words at all.
    """
    num_words = _check_tag_pairs(true_tags, pred_tags)
    correct = sum(
        g == p
        for gold, pred in zip(true_tags, pred_tags, strict=True)
        for g, p in zip(gold, pred, strict=True)
    )
    return {"accuracy": correct / num_words}


def compute_ner_metrics(
    true_tags: list[list[str]], pred_tags: list[list[str]], scheme: str
) -> NerMetrics:
    """Scores named-entity recognition at entity level, as conlleval does.

    Both sides are converted to canonical IOB2 with ``to_iob2`` (lenient: an ``I-X`` that
    cannot continue an entity starts one), then scored with seqeval in strict IOB2 mode,
    so an entity counts as correct only if type, start and end all match. Scoring raw
    IOB1 tags in strict IOB2 mode would silently drop every entity that starts with
    ``I-``; converting first avoids that.

    Args:
        true_tags: Gold word-level tags, one list per sentence.
        pred_tags: Predicted word-level tags, aligned with ``true_tags``.
        scheme: Tag scheme of both sides: ``"IOB1"``, ``"IOB2"`` or ``"BIOES"``.

    Returns:
        ``precision``, ``recall``, ``f1`` (micro over entities; 0.0 when undefined, e.g.
        no entities on either side), ``accuracy`` (word-level exact tag match on the
        original, unconverted tags) and ``per_type``: for every entity type seen in gold
        or predictions, ``{"precision", "recall", "f1", "support"}`` where ``support`` is
        the number of gold entities (an int).

    Raises:
        ValueError: On an unknown scheme, an invalid tag, different sequence counts, a pair
            of different lengths (the message names its index) or no words at all.
    """
    tag_scheme = check_scheme(scheme)
    accuracy = compute_tagging_accuracy(true_tags, pred_tags)["accuracy"]
    gold_iob2 = [to_iob2(tags, tag_scheme) for tags in true_tags]
    pred_iob2 = [to_iob2(tags, tag_scheme) for tags in pred_tags]
    has_entities = any(t != "O" for tags in gold_iob2 + pred_iob2 for t in tags)
    if not has_entities:
        # seqeval returns NaN macro averages (with warnings) when there is nothing to score.
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": accuracy, "per_type": {}}
    report = classification_report(
        gold_iob2, pred_iob2, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
    )
    per_type = {
        name: {
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1-score"]),
            "support": int(row["support"]),
        }
        for name, row in report.items()
        if not name.endswith(" avg")  # seqeval adds micro/macro/weighted avg rows
    }
    micro = report["micro avg"]
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "accuracy": accuracy,
        "per_type": per_type,
    }


def _correlation(kind: str, x: np.ndarray, y: np.ndarray) -> float:
    """Pearson or Spearman correlation; 0.0 when either side is constant (undefined)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    result = stats.pearsonr(x, y) if kind == "pearson" else stats.spearmanr(x, y)
    return float(result.statistic)


def compute_regression_metrics(
    y_true: Sequence[float], y_pred: Sequence[float]
) -> dict[str, float]:
    """Scores regression (e.g. STS-B similarity).

    Returns:
        ``pearson``, ``spearman``, ``mse``, ``mae``. A correlation is undefined when either
        side is constant (or has one item); it is reported as 0.0, not NaN, so a collapsed
        model scores badly instead of breaking early stopping.

    Raises:
        ValueError: On empty input, different lengths or non-finite values.
    """
    true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if true.size == 0:
        raise ValueError("cannot score an empty split: y_true is empty")
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} items but y_pred has {pred.size}")
    if not (np.isfinite(true).all() and np.isfinite(pred).all()):
        raise ValueError("y_true and y_pred must be finite (found NaN or inf)")
    error = pred - true
    return {
        "pearson": _correlation("pearson", true, pred),
        "spearman": _correlation("spearman", true, pred),
        "mse": float(np.mean(error**2)),
        "mae": float(np.mean(np.abs(error))),
    }


def _multi_hot(rows: Sequence[Sequence[int]], width: int, name: str) -> np.ndarray:
    matrix = np.asarray(rows)
    if matrix.ndim != 2 or matrix.shape[1] != width:
        raise ValueError(f"{name} must be rows of width {width}, got shape {matrix.shape}")
    if not np.isin(matrix, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0/1 values")
    return matrix.astype(bool)


def compute_multilabel_metrics(
    y_true: Sequence[Sequence[int]], y_pred: Sequence[Sequence[int]], labels: list[str]
) -> dict[str, float]:
    """Scores multi-label classification from multi-hot rows.

    Macro averages run over the FULL label vocabulary with ``zero_division=0``: a label
    never gold and never predicted scores 0 and still counts in the mean.

    Args:
        y_true: Gold 0/1 rows, each of width ``len(labels)``.
        y_pred: Predicted 0/1 rows, same shape.
        labels: The full label vocabulary.

    Returns:
        ``micro_f1``, ``micro_precision``, ``micro_recall``, ``macro_f1``,
        ``macro_precision``, ``macro_recall``, ``subset_accuracy`` (fraction of rows
        predicted exactly) and ``hamming_accuracy`` (fraction of row/label cells right).

    Raises:
        ValueError: On empty input, an empty vocabulary, a shape mismatch or values other
            than 0/1.
    """
    if not labels:
        raise ValueError("labels is empty")
    if len(y_true) == 0:
        raise ValueError("cannot score an empty split: y_true is empty")
    true = _multi_hot(y_true, len(labels), "y_true")
    pred = _multi_hot(y_pred, len(labels), "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {len(true)} rows but y_pred has {len(pred)}")
    tp = (true & pred).sum(axis=0)
    fp = (~true & pred).sum(axis=0)
    fn = (true & ~pred).sum(axis=0)
    return {
        **_micro_macro(tp, fp, fn),
        "subset_accuracy": float((true == pred).all(axis=1).mean()),
        "hamming_accuracy": float((true == pred).mean()),
    }


def _micro_macro(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, float]:
    """Micro (pooled counts) and macro (mean over every label) precision, recall and F1."""
    precision, recall, f1 = _precision_recall_f1(tp, fp, fn)
    micro_p, micro_r, micro_f1 = _precision_recall_f1(tp.sum(), fp.sum(), fn.sum())
    return {
        "micro_f1": float(micro_f1),
        "micro_precision": float(micro_p),
        "micro_recall": float(micro_r),
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
    }
