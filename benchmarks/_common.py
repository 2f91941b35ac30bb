"""What the benchmark scripts share: the real tasks of ../shared/datasets, machine facts,
peak memory, tables and JSON. Not part of the library."""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import gc
import json
import os
import platform
import resource
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(REPO))

DEFAULT_DATASETS = Path(os.environ.get("MTB_SHARED_DIR", REPO.parent / "shared")) / "datasets"
DEFAULT_CACHE = REPO / ".work" / "cache"

# Environment of scripts/env.sh, for a run without sourcing it (before HF imports).
for _key, _value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                     "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "true",
                     "MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false",
                     "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(_key, _value)

# Encoders: the packaged MiniLM and random-weight BERTs built from its config.
MODELS: dict[str, dict[str, Any]] = {
    "minilm": {},
    # the MiniLM's shapes with random weights: the speed of the MiniLM where its weights are
    # not installed (a GPU machine with its own packages)
    "minilm-random": {"random_init": True},
    "tiny": {"random_init": True, "config_overrides": {
        "num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2,
        "intermediate_size": 512}},
    "bert-base": {"random_init": True, "config_overrides": {
        "num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12,
        "intermediate_size": 3072}},
}


def benchmark_tasks(datasets_dir: Path, limit: int | None) -> list[dict[str, Any]]:
    """CoNLL-2003 (ner, pos, chunk), TREC (coarse, fine), SST-2: train splits only, each a
    seeded subset of ``limit`` examples (the heads of configs/benchmark.yaml)."""
    def train(name: str) -> dict[str, Any]:
        source: dict[str, Any] = {"path": str(datasets_dir / name / "train.jsonl")}
        if limit:
            source["limit"] = limit
        return source

    return [
        {"name": "conll2003", "type": "token", "train": train("conll2003"),
         "heads": [{"name": "ner", "type": "tagging", "scheme": "IOB1"},
                   {"name": "pos", "type": "tagging"},
                   {"name": "chunk", "type": "tagging", "scheme": "IOB1"}]},
        {"name": "trec", "type": "sequence", "train": train("trec"),
         "heads": [{"name": "coarse", "type": "classification", "column": "coarse_label"},
                   {"name": "fine", "type": "classification", "column": "fine_label"}]},
        {"name": "sst2", "type": "sequence", "train": train("sst2"),
         "heads": [{"name": "sentiment", "type": "classification", "column": "label"}]},
    ]


def check_datasets(datasets_dir: Path) -> None:
    missing = [n for n in ("conll2003", "trec", "sst2")
               if not (datasets_dir / n / "train.jsonl").is_file()]
    if missing:
        sys.exit(f"datasets not found under {datasets_dir} ({', '.join(missing)}); pass "
                 "--datasets-dir or set MTB_SHARED_DIR")


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, torch version and threads, GPU, load and date."""
    import torch

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    with contextlib.suppress(ImportError):
        import transformers

        info["transformers"] = transformers.__version__
    return info


def load_1min() -> float:
    return round(os.getloadavg()[0], 2)


def release_memory() -> None:
    """Give freed memory back to the OS, so the next peak is measured from a clean slate."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status_kb(field: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


class PeakMemory:
    """Peak memory of a code block.

    CPU: the process's resident-set high-water mark (``VmHWM``), reset at the start of the
    block by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0); ``peak_mb`` is the
    whole process's peak RSS during the block, ``delta_mb`` that minus the RSS at its start
    (what the block itself added). Where the reset is refused, ``getrusage`` ``ru_maxrss``
    (a lifetime maximum) is used and ``method`` says so. CUDA: ``max_memory_allocated``.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.method = ""
        self.peak_mb = self.delta_mb = 0.0
        self._start_kb = 0

    def __enter__(self) -> PeakMemory:
        release_memory()
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start_kb = torch.cuda.memory_allocated() // 1024
            self.method = "torch.cuda.max_memory_allocated"
            return self
        self._start_kb = _status_kb("VmRSS") or 0
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM after /proc/self/clear_refs reset (RSS high-water)"
        except OSError:
            self.method = "getrusage ru_maxrss (lifetime high-water; no reset available)"
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            peak_kb = torch.cuda.max_memory_allocated() // 1024
        elif self.method.startswith("VmHWM"):
            peak_kb = _status_kb("VmHWM") or 0
        else:
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.peak_mb = round(peak_kb / 1024, 1)
        self.delta_mb = round((peak_kb - self._start_kb) / 1024, 1)


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A Markdown table: ``columns`` are (key, header) pairs."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            if value != value:  # nan
                return "n/a"
            if abs(value) >= 100:
                return f"{value:,.0f}"
            return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(k)) for k, _ in columns) + " |")
    return "\n".join(lines)


def write_json(path: str | Path | None, data: dict[str, Any]) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Library INFO lines (one per step when the progress bar is off) stay out of timings."""
    import logging

    names = ["multitask_bert", "transformers", "datasets", "prefect", "mlflow", "httpx",
             "alembic"]
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def machine_line(machine: dict[str, Any]) -> str:
    return (f"{machine['nproc']} CPUs ({machine['cpu']}), torch {machine['torch']} with "
            f"{machine['torch_threads']} threads, GPU {machine['gpu'] or 'none'}, Python "
            f"{machine['python']}")


def results_section(title: str, machine: dict[str, Any], load: str, body: str) -> str:
    """A RESULTS.md section: title, exact command, machine, date, load, then ``body``."""
    command = "python " + " ".join(
        [str(Path(sys.argv[0]).resolve().relative_to(REPO))
         if Path(sys.argv[0]).resolve().is_relative_to(REPO) else sys.argv[0], *sys.argv[1:]])
    return (f"## {title}\n\n"
            f"- command: `{command}`\n"
            f"- machine: {machine_line(machine)}\n"
            f"- date: {machine['date']}\n"
            f"- load (1-min average): {load}\n\n"
            f"{body.strip()}\n")


def append_markdown(path: str | Path | None, text: str) -> None:
    """Append a section (other sections of the file belong to other benchmarks)."""
    if not path:
        return
    path = Path(path)
    existing = path.read_text() if path.is_file() else "# Benchmark results\n"
    separator = "" if existing.endswith("\n\n") else ("\n" if existing.endswith("\n") else "\n\n")
    if not path.is_file():
        path.write_text(existing)
    with path.open("a") as out:
        out.write(separator + text)
    print(f"appended to {path}")
