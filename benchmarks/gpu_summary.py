"""The last step of benchmarks/gpu_check.sh: one JSON of everything the check measured, and a
short table of the issue's targets (printed last, so the end of the log holds it).

    python benchmarks/gpu_summary.py OUT_DIR --phases phases.tsv --mode gpu
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import _common  # benchmarks/_common.py; puts the repo on sys.path

THROUGHPUT_FILES = ("throughput-large.json", "throughput-batch32.json")


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_phases(path: Path | None) -> list[dict[str, Any]]:
    """``name<TAB>exit code<TAB>seconds<TAB>limit`` lines written by gpu_check.sh."""
    if path is None or not path.is_file():
        return []
    phases = []
    for line in path.read_text().splitlines():
        name, rc, seconds, limit = [*line.split("\t"), "", "", "", ""][:4]
        phases.append({"phase": name, "exit_code": int(rc) if rc.lstrip("-").isdigit() else rc,
                       "seconds": float(seconds or 0), "limit_s": limit,
                       "status": ("ok" if rc == "0" else "timed out" if rc in ("124", "130")
                                  else "skipped" if rc == "skipped" else "failed")})
    return phases


def read_tests(path: Path) -> dict[str, Any] | None:
    """Counts and failed test names of a pytest JUnit XML file."""
    if not path.is_file():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"error": str(exc)}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(s.get(key, 0)) for s in suites)
              for key in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in root.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    skipped = [f"{case.get('name')}: {case.find('skipped').get('message', '')}"
               for case in root.iter("testcase") if case.find("skipped") is not None]
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "failed": failed, "skipped_why": skipped}


def target_rows(name: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target and model of a throughput report."""
    rows = []
    targets = report.get("targets", {})
    for model, out in report.get("models", {}).items():
        r = out.get("ratios", {})
        where = f"{model}, batch {out.get('batch_size')} ({name})"
        checks = [
            ("pad share (ours)", "pad_share_ours", "pad_share_target_met",
             f"<= {100 * targets.get('pad_share_max', 0):.0f} %", 100, "%"),
            ("ours / HF Trainer, real tok/s", "ours_over_hf_real_tokens",
             "ours_over_hf_target_met", f">= {targets.get('ours_over_hf_min')}x", 1, "x"),
            ("ours slower than bare loop", "ours_slower_than_bare_pct",
             "ours_vs_bare_target_met",
             f"<= {targets.get('ours_slower_than_bare_max_pct')} %", 1, "%"),
            ("MFU (ours, datasheet bf16 peak)", "mfu_ours", "mfu_target_met",
             f">= {100 * targets.get('mfu_min', 0):.0f} %", 100, "%"),
        ]
        for label, key, met_key, wanted, scale, unit in checks:
            if key not in r or (met_key not in r and key == "mfu_ours"):
                continue
            rows.append({"target": label, "where": where,
                         "measured": f"{scale * r[key]:.2f} {unit}", "wanted": wanted,
                         "met": {True: "met", False: "NOT met"}.get(r.get(met_key), "-")})
    return rows


def summarize(out_dir: Path, phases_file: Path | None, mode: str) -> dict[str, Any]:
    env = _load(out_dir / "env.json") or {}
    summary: dict[str, Any] = {
        "mode": mode,
        "phases": read_phases(phases_file),
        "environment": {k: env.get(k) for k in ("python", "torch", "nvidia_smi", "matmul",
                                                  "packed_attention", "problems")},
        "tests": read_tests(out_dir / "tests.xml"),
        "throughput": {}, "targets": [], "profiles": {},
    }
    for name in THROUGHPUT_FILES:
        report = _load(out_dir / name)
        if not report:
            continue
        key = name.removesuffix(".json")
        summary["throughput"][key] = {
            model: {"batch_size": out.get("batch_size"), "unpadded": out.get("unpadded"),
                    "packed_attention": out.get("packed_attention"),
                    "contenders": {c: {k: v.get(k) for k in (
                        "real_tokens_per_s", "pad_share", "mfu", "peak_mem_mb", "seconds")}
                        for c, v in out.get("contenders", {}).items()},
                    "ratios": out.get("ratios"), "missed_targets": out.get("missed_targets")}
            for model, out in report.get("models", {}).items()}
        summary["targets"] += target_rows(key, report)
        for model, out in report.get("models", {}).items():
            if "profile" in out:
                summary["profiles"][f"{key}/{model}"] = out["profile"]
    epoch = _load(out_dir / "epoch.json")
    summary["epoch"] = epoch.get("result") if epoch else None
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\n## GPU check summary ({summary['mode']} mode)\n")
    print(_common.format_table(summary["phases"], [
        ("phase", "phase"), ("status", "status"), ("exit_code", "exit"),
        ("seconds", "s"), ("limit_s", "limit s")]))
    tests = summary["tests"]
    if tests and "tests" in tests:
        print(f"\ntests: {tests['passed']} passed, {tests['failures'] + tests['errors']} failed,"
              f" {tests['skipped']} skipped" + (f"; failed: {tests['failed']}"
                                                if tests["failed"] else ""))
    problems = (summary["environment"] or {}).get("problems") or []
    print("environment problems: " + ("; ".join(problems) if problems else "none"))
    packed = (summary["environment"] or {}).get("packed_attention") or {}
    if packed:
        print(f"packed attention kernels: plain {packed.get('plain')}, with dropout "
              f"{packed.get('with_dropout')}; checks {packed.get('checks')}")
    if summary["targets"]:
        print()
        print(_common.format_table(summary["targets"], [
            ("target", "target"), ("where", "where"), ("measured", "measured"),
            ("wanted", "wanted"), ("met", "met")]))
    for where, profile in summary["profiles"].items():
        top = ", ".join(f"{row['name'][:60]} {100 * row['share']:.0f}%"
                        for row in profile["top"][:5])
        print(f"\nprofile {where} ({profile['clock']}): {top}")
    epoch = summary["epoch"]
    if epoch:
        print(f"\nepoch ({epoch['model']}, {epoch['device']}, unpadded {epoch['unpadded']}): "
              f"{epoch['steps']} steps, train {epoch['epoch_train_s']} s, evaluation "
              f"{epoch['evaluation_s']} s, tokenise (cold) {epoch['tokenize_cold_s']} s, "
              f"{epoch['real_tokens_per_s']:,.0f} real tok/s, pad share "
              f"{100 * epoch['pad_share']:.1f} %, peak {epoch['peak_mem_mb']} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--phases", type=Path, default=None)
    parser.add_argument("--mode", default="gpu", choices=["gpu", "cpu"])
    args = parser.parse_args(argv)
    summary = summarize(args.out_dir, args.phases, args.mode)
    summary["machine"] = _common.machine_info()
    _common.write_json(args.out_dir / "gpu_check.json", summary)
    print_summary(summary)
    failed = [p["phase"] for p in summary["phases"] if p["status"] != "ok"]
    if failed:
        print(f"\nphases not ok: {', '.join(failed)} (the log says why)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
