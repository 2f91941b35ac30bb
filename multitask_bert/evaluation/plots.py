"""Evaluation plots saved as PNG: confusion matrices and per-entity-type F1."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_metric_plots(metrics: dict[str, dict[str, dict[str, Any]]], folder: str | Path
                      ) -> list[Path]:
    """One confusion matrix per classification head, one per-type F1 bar chart per entity
    tagging head. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for task, heads in metrics.items():
        for head, values in heads.items():
            if "confusion_matrix" in values:
                written.append(_confusion(plt, values, f"{task}/{head}",
                                          folder / f"{task}.{head}.confusion.png"))
            if values.get("per_type"):
                written.append(_per_type(plt, values["per_type"], f"{task}/{head}",
                                         folder / f"{task}.{head}.per_type_f1.png"))
    return written


def _confusion(plt: Any, values: dict, title: str, path: Path) -> Path:
    matrix, labels = values["confusion_matrix"], values.get("labels") or []
    size = max(4.0, 0.35 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"{title}: accuracy {values.get('accuracy', 0):.3f}")
    if len(labels) <= 12:
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _per_type(plt: Any, per_type: dict, title: str, path: Path) -> Path:
    types = sorted(per_type)
    f1 = [per_type[t]["f1"] for t in types]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(types) + 2), 3.5))
    bars = ax.bar(types, f1, color="#4c72b0")
    for bar, t in zip(bars, types, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(),
                f"{per_type[t]['f1']:.2f}\n(n={per_type[t]['support']})",
                ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("entity F1")
    ax.set_title(f"{title}: F1 per entity type")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
