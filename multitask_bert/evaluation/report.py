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


def wide_metrics_table(metrics: dict[str, dict[str, dict[str, dict[str, Any]]]],
                       majors: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per task/head, one column per metric and split (``f1 validation``, ``f1
    test``, side by side), values to 4 decimals; ``major`` names the head's major metric.

    Args:
        metrics: ``{split: {task: {head: {metric: value}}}}``.
        majors: ``{"task/head": major metric}``.
    """
    majors = majors or {}
    splits = list(metrics)
    heads: dict[tuple[str, str], dict[str, float]] = {}
    names: list[str] = []
    for split in splits:
        for task, head, metric, value in metrics_rows(metrics[split]):
            heads.setdefault((task, head), {})[f"{metric} {split}"] = round(value, 4)
            if metric not in names:
                names.append(metric)
    rows = []
    for (task, head), values in heads.items():
        major = majors.get(f"{task}/{head}", "")
        order = ([major] if major in names else []) + [n for n in names if n != major]
        row: dict[str, Any] = {"task": task, "head": head, "major": major}
        for metric in order:
            for split in splits:
                row[f"{metric} {split}"] = values.get(f"{metric} {split}")
        rows.append(row)
    columns = ["task", "head", "major"] + [f"{m} {s}" for m in names for s in splits]
    # every row with every column (a missing metric of a head type is None), in one order
    return [{**{c: row.get(c) for c in columns}, **row} for row in rows]


def format_head_table(metrics: dict[str, dict[str, dict[str, dict[str, Any]]]],
                      majors: dict[str, str]) -> str:
    """A plain-text table for logs: one line per head, its major metric per split."""
    splits = list(metrics)
    lines = [f"{'task/head':<28} {'major':<10} " + " ".join(f"{s:>10}" for s in splits)]
    for key, major in majors.items():
        task, head = key.split("/", 1)
        cells = []
        for split in splits:
            value = metrics[split].get(task, {}).get(head, {}).get(major)
            cells.append(f"{value:>10.4f}" if isinstance(value, (int, float)) else " " * 10)
        lines.append(f"{key:<28} {major:<10} " + " ".join(cells))
    return "\n".join(lines)


def _score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value)


def run_summary_markdown(
    name: str,
    score_metric: str,
    evaluated: dict[str, Any],
    registration: dict[str, Any],
    tracking_uri: str,
) -> str:
    """The run summary: score, champion before, aliases, decision (and the heads that
    regressed), per-head table with validation and test side by side.

    Args:
        name: the experiment's name.
        score_metric: what the score is (``mean``, ``task/head``...).
        evaluated: ``{"score", "champion", "metrics": {split: Metrics}, "majors"}``.
        registration: ``{"model_name", "version", "aliases", "reason", "regressed_heads"}``.
        tracking_uri: where the run is tracked (already redacted).
    """
    champion = evaluated.get("champion") or {}
    lines = [f"# {name}: {registration['model_name']} v{registration['version']}",
             "", f"**Score** ({score_metric}, validation): {evaluated['score']:.4f}"]
    if champion:
        lines.append(f"**Champion before this run**: v{champion['version']}, score "
                     f"{_score(champion.get('score'))}")
    lines += [f"**Aliases**: {', '.join(registration['aliases'])}",
              f"**Decision**: {registration['reason']}"]
    regressed = registration.get("regressed_heads") or {}
    if regressed:
        lines += ["", "**Heads that regressed** (more than the margin below the champion):", "",
                  "| head | this version | champion | change |", "|---|---:|---:|---:|"]
        for head, values in regressed.items():
            lines.append(f"| {head} | {values['score']:.4f} | {values['champion']:.4f} | "
                         f"{values['delta']:+.4f} |")
    splits = list(evaluated["metrics"])
    lines += ["", "| task | head | metric | " + " | ".join(splits) + " |",
              "|---|---|---|" + "---:|" * len(splits)]
    seen: dict[tuple[str, str, str], dict[str, float]] = {}
    for split in splits:
        for task_name, head, metric, value in metrics_rows(evaluated["metrics"][split]):
            seen.setdefault((task_name, head, metric), {})[split] = value
    for (task_name, head, metric), values in seen.items():
        cells = " | ".join(_score(values[s]) if s in values else "" for s in splits)
        lines.append(f"| {task_name} | {head} | {metric} | {cells} |")
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
