"""The layout rules of the package, checked on its source (issue 10):

* no import cycle anywhere in ``multitask_bert`` (imports inside functions count; imports
  under ``if TYPE_CHECKING:`` do not run and do not count);
* no branch on a head type outside ``multitask_bert/heads/`` and no branch on a task type
  outside ``multitask_bert/task_types/``;
* the flow imports the pipeline façade only (plus Prefect, pydantic and the standard
  library), and its tasks are short.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "multitask_bert"
FLOW_TASKS = {
    "train_multitask.py": {"tokenize_task", "train_task", "evaluate_task", "register_task"},
    "score_multitask.py": {"score_task"},
    "sweep_multitask.py": {"start_trial", "follow_trial", "register_best"},
}
"""Every flow file and the Prefect tasks it defines."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports when it runs (any depth, not TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return {name for name in found if name in known and name != this}


def package_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, known) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    graph = package_graph()
    assert graph.get("multitask_bert.pipeline")
    assert cycles(graph) == []


def test_nothing_in_the_library_imports_the_facade_or_the_flow():
    graph = package_graph()
    users = sorted(m for m, targets in graph.items() if "multitask_bert.pipeline" in targets)
    assert users == ["multitask_bert.cli"]


HEAD_TYPE_BRANCH = re.compile(
    r"""(head|spec|h|kind)\.type\s*(==|!=|in\b|not in\b)|["'](classification|multilabel|"""
    r"""regression|tagging)["']\s*(==|!=|in\b)|(==|!=)\s*["'](classification|multilabel|"""
    r"""regression|tagging)["']|\b(head|spec)\.scheme\b""")
TASK_TYPE_BRANCH = re.compile(
    r"""task\.type\s*(==|!=|in\b|not in\b)|(==|!=)\s*["'](token|sequence)["']""")


def test_no_branch_on_a_head_type_outside_the_heads_package():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "heads" in path.relative_to(PACKAGE).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if HEAD_TYPE_BRANCH.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


def test_no_branch_on_a_task_type_outside_the_task_types_package():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "task_types" in path.relative_to(PACKAGE).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if TASK_TYPE_BRANCH.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_branch_patterns_catch_what_they_are_for():
    assert HEAD_TYPE_BRANCH.search('if head.type == "tagging":')
    assert HEAD_TYPE_BRANCH.search('fill = "O" if self.head.scheme else None')
    assert TASK_TYPE_BRANCH.search('if task.type == "token":')
    assert not HEAD_TYPE_BRANCH.search('if device.type == "cuda":')


def test_every_flow_file_is_checked():
    assert {p.name for p in (REPO / "flows").glob("*.py")} - {"__init__.py"} == set(FLOW_TASKS)


@pytest.mark.parametrize("flow_file", sorted(FLOW_TASKS))
def test_the_flow_imports_only_the_facade_prefect_and_the_standard_library(flow_file):
    tree = ast.parse((REPO / "flows" / flow_file).read_text())
    roots: set[str] = set()
    ours: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
            if node.module == "multitask_bert":
                ours.update(alias.name for alias in node.names)
        else:
            continue
        for name in names:
            roots.add(name.split(".")[0])
            if name.startswith("multitask_bert."):
                ours.add(name.removeprefix("multitask_bert."))
    third_party = roots - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"prefect", "pydantic", "multitask_bert"}
    assert ours == {"pipeline"}


@pytest.mark.parametrize("flow_file", sorted(FLOW_TASKS))
def test_the_flow_tasks_are_short(flow_file):
    tree = ast.parse((REPO / "flows" / flow_file).read_text())
    tasks = [node for node in tree.body if isinstance(node, ast.FunctionDef)
             and any(ast.unparse(d).startswith("task") for d in node.decorator_list)]
    assert {t.name for t in tasks} == FLOW_TASKS[flow_file]
    for node in tasks:
        body = node.body[1:] if isinstance(node.body[0], ast.Expr) else node.body  # docstring
        lines = body[-1].end_lineno - body[0].lineno + 1
        assert lines <= 15, f"{node.name}: {lines} lines"
