"""Plain-text tables of per-head metrics for terminals and logs."""

from __future__ import annotations

from typing import Any


def metrics_rows(
    metrics: dict[str, dict[str, dict[str, Any]]],
) -> list[tuple[str, str, str, float]]:
    """``(task, head, metric, value)`` for every scalar metric (per-type details left out)."""
    rows = []
    for task, heads in metrics.items():
        for head, values in heads.items():
            for metric, value in values.items():
                if isinstance(value, (int, float)) and metric != "truncated_words":
                    rows.append((task, head, metric, float(value)))
    return rows


def format_metrics_table(
    metrics: dict[str, dict[str, dict[str, Any]]],
    title: str = "",
    keys: tuple[str, ...] = ("accuracy", "f1", "macro_f1", "micro_f1", "pearson", "spearman"),
) -> str:
    """A compact table: one line per head with its main metrics."""
    lines = [title] if title else []
    lines.append(f"{'task':<16} {'head':<12} " + " ".join(f"{k:>9}" for k in keys))
    for task, heads in metrics.items():
        for head, values in heads.items():
            cells = []
            for key in keys:
                value = values.get(key)
                cells.append(f"{value:>9.4f}" if isinstance(value, (int, float)) else " " * 9)
            lines.append(f"{task:<16} {head:<12} " + " ".join(cells))
    return "\n".join(lines)


def run_summary_markdown(
    name: str,
    score_metric: str,
    evaluated: dict[str, Any],
    registration: dict[str, Any],
    tracking_uri: str,
) -> str:
    """The run summary: score, champion before, aliases, decision, per-head validation table.

    Args:
        name: the experiment's name.
        score_metric: what the score is (``mean``, ``task/head``...).
        evaluated: ``{"score", "champion", "metrics": {"validation": Metrics}}``.
        registration: ``{"model_name", "version", "aliases", "reason"}``.
        tracking_uri: where the run is tracked (already redacted).
    """
    champion = evaluated.get("champion") or {}
    lines = [f"# {name}: {registration['model_name']} v{registration['version']}",
             "", f"**Score** ({score_metric}, validation): {evaluated['score']:.4f}"]
    if champion:
        lines.append(f"**Champion before this run**: v{champion['version']}, score "
                     f"{champion.get('score')}")
    lines += [f"**Aliases**: {', '.join(registration['aliases'])}",
              f"**Decision**: {registration['reason']}", "",
              "| task | head | metric | validation |", "|---|---|---|---|"]
    for task_name, head, metric, value in metrics_rows(evaluated["metrics"]["validation"]):
        lines.append(f"| {task_name} | {head} | {metric} | {value:.4f} |")
    gradients = gradient_markdown(evaluated.get("gradients") or {})
    if gradients:
        lines += ["", gradients]
    lines += ["", f"MLflow: `{tracking_uri}`"]
    return "\n".join(lines)


def gradient_markdown(gradients: dict[str, float]) -> str:
    """The gradient telemetry as markdown: each task's gradient norm on the shared encoder,
    then the cosine of every task pair (negative: the tasks pull the encoder apart)."""
    if not gradients:
        return ""
    lines = ["**Gradients on the shared encoder** (last evaluation)", "",
             "| task or pair | norm / cosine |", "|---|---:|"]
    for key, value in gradients.items():
        name, kind = key.split("/")[1], key.rsplit("/", 1)[-1]
        flag = " (conflict)" if kind == "cosine" and value < 0 else ""
        lines.append(f"| {name} | {kind} {value:.4f}{flag} |")
    return "\n".join(lines)
