"""Each benchmark script runs end to end in a tiny mode and writes JSON with the expected
keys. No timing assertions: these machines are shared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATASETS, REPO

needs_datasets = pytest.mark.skipif(
    not (DATASETS / "sst2" / "train.jsonl").is_file(),
    reason=f"the real datasets are not at {DATASETS}",
)


def run_script(name: str, *args: str, tmp_path: Path, timeout: int = 300) -> dict:
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "MTB_SHARED_DIR": str(DATASETS.parent)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *args, "--json", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "|" in proc.stdout  # the table
    return json.loads(out.read_text())


@needs_datasets
def test_throughput_smoke(tmp_path):
    data = run_script("throughput", "--model", "tiny", "--examples", "16", "--steps", "3",
                      "--warmup-steps", "1", "--threads", "1",
                      "--cache-dir", str(tmp_path / "cache"), tmp_path=tmp_path)
    assert {"machine", "args", "targets", "models"} <= set(data)
    assert {"nproc", "cpu", "torch", "load_avg_1_5_15"} <= set(data["machine"])
    tiny = data["models"]["tiny"]
    assert tiny["total_steps"] == 3
    assert tiny["peak_flops"] > 0
    assert set(tiny["contenders"]) == {"ours", "hf", "naive", "bare"}
    for name, result in tiny["contenders"].items():
        assert result["steps"] == 3, name
        for key in ("real_tokens_per_s", "padded_tokens_per_s", "pad_share", "samples_per_s",
                    "peak_mem_mb", "mfu", "hardware_flops_utilisation"):
            assert result[key] >= 0, (name, key)
    # ours, bare and naive train on exactly the same examples
    assert tiny["contenders"]["ours"]["samples"] == tiny["contenders"]["bare"]["samples"]
    assert tiny["contenders"]["ours"]["real_tokens"] == tiny["contenders"]["bare"]["real_tokens"]
    assert tiny["contenders"]["naive"]["pad_share"] > tiny["contenders"]["bare"]["pad_share"]
    assert {"ours_over_hf_real_tokens", "ours_slower_than_bare_pct", "pad_share_ours"} <= set(
        tiny["ratios"])


@needs_datasets
def test_tokenize_smoke(tmp_path):
    data = run_script("tokenize_cache", "--examples", "16", "--repeats", "1", tmp_path=tmp_path)
    runs = {(r["method"], r["run"]) for r in data["rows"]}
    assert runs == {("ours", "cold"), ("ours", "cached"), ("ours", "cached + load"),
                    ("datasets.map", "cold"), ("datasets.map", "cached")}
    assert all(r["examples"] == 48 and r["sentences_per_s"] > 0 for r in data["rows"])
    assert {"ours_cached_speedup", "target_met", "ours_cold_over_map_cold"} <= set(
        data["summary"])


@pytest.mark.slow
def test_flow_overhead_smoke(tmp_path):
    data = run_script("flow_overhead", "--model", "tiny", "--max-steps", "3", "--threads", "1",
                      tmp_path=tmp_path, timeout=600)
    summary = data["summary"]
    assert {"flow_s", "library_s", "overhead_s", "overhead_pct_of_flow"} <= set(summary)
    assert summary["flow_s"] > 0 and summary["library_s"] > 0
    assert set(data["library_steps_s"]) == {"tokenize", "train", "evaluate", "register",
                                            "total"}
    states = {v["state"] for v in data["prefect"]["tasks"].values()}
    assert states == {"Completed"}
    assert data["flow_result"]["registration"]["version"] in (1, "1")


@needs_datasets
@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path):
    """benchmarks/gpu_check.sh --cpu: every step of the one-shot GPU check, end to end on CPU
    at tiny sizes (the unpadded path included), so the GPU call cannot fail on a typo."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "MTB_SHARED_DIR": str(DATASETS.parent),
           "MTB_GPU_BUNDLE": str(tmp_path / "no-bundle")}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu",
                           str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1000)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["env.json", "epoch.json", "gpu_check.json", "gpu_check.log", "tests.xml",
                     "throughput-batch32.json", "throughput-large.json"]
    assert len(files) <= 8  # what a device call brings back
    summary = json.loads((out / "gpu_check.json").read_text())
    assert [p["phase"] for p in summary["phases"]] == [
        "environment", "tests", "throughput-large", "epoch", "throughput-batch32"]
    assert {p["status"] for p in summary["phases"]} == {"ok"}
    assert summary["environment"]["problems"] == []
    assert summary["tests"]["tests"] >= 5 and summary["tests"]["failures"] == 0
    large = summary["throughput"]["throughput-large"]["tiny"]
    assert large["unpadded"] is True and large["contenders"]["ours"]["pad_share"] == 0.0
    assert large["contenders"]["ours_padded"]["pad_share"] > 0
    assert set(large["contenders"]) == {"ours", "ours_padded", "hf", "bare"}
    assert summary["profiles"]["throughput-large/tiny"]["top"]
    assert {row["target"] for row in summary["targets"]} >= {
        "pad share (ours)", "ours / HF Trainer, real tok/s", "ours slower than bare loop"}
    epoch = summary["epoch"]
    assert epoch["unpadded"] is True and epoch["steps"] > 0 and epoch["pad_share"] == 0.0
    log = (out / "gpu_check.log").read_text()
    assert "## GPU check summary (cpu mode)" in log and "no bundle at" in log
