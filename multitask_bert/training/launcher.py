"""Launch and supervise a training process: the flow's ``train`` step, without Prefect.

``run_training(run_dir)`` starts ``python -m multitask_bert train --run-dir <run_dir>`` on
the run folder's resolved ``config.yaml`` (under ``torchrun`` when the launch plan has more
than one process: ``training.nproc_per_node`` and the nodes of
:mod:`multitask_bert.training.torchrun`), streams its log lines (rank 0's) to a callback,
and turns its exit status into an outcome a retry policy can act on:

==========  =====================================================================
exit 0      the run folder's ``metrics.json`` (returned)
exit 2      :class:`UserInputError`: bad config or data, or a full disk
            (:class:`~multitask_bert.errors.DiskFullError`: its message names the path
            and the space needed); retrying cannot help until someone acts, and the
            checkpoint stays valid, so a later run resumes from it
exit 3      :class:`TrainingOutOfMemory`: CUDA OOM; the run folder's config now has
            half the per-device batch and twice the accumulation (same effective batch),
            so a retry fits
other       :class:`TrainingCrashed`: killed, preempted, crashed; a retry resumes from the
            newest checkpoint
==========  =====================================================================

With ``MTB_KUBERNETES_LAUNCH`` set, the run trains as a multi-node Kubernetes job
(:mod:`multitask_bert.training.kubernetes`), followed with the same exit codes.

Under ``torchrun`` the same rules hold across ranks: the exit code is the one of the rank
that failed first (``torchrun``'s root cause), so a user error or an OOM on any rank is
classified as above, and a killed rank is a crash. On one node of a multi-node job the
launcher leaves the OOM halving to the job's supervisor (every node would rewrite the shared
config otherwise); it raises :class:`TrainingOutOfMemory` all the same.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from multitask_bert.atomic import write_text_atomic
from multitask_bert.config import RUN_CONFIG_FILE, ExperimentConfig
from multitask_bert.errors import EXIT_OUT_OF_MEMORY, EXIT_USER_ERROR, MultitaskBertError
from multitask_bert.training.kubernetes import LAUNCH_ENV, KubernetesLaunch, run_job
from multitask_bert.training.torchrun import (
    LaunchPlan,
    decisive_failure,
    rank_failures,
    threads_per_process,
)

PID_FILE = "train.pid"
"""The running training process's PID, in the run folder (removed when it ends)."""
OOM_FILE = "oom_retries"
"""How many times the per-device batch was halved after an out-of-memory exit."""
_TAIL = 30  # lines of the child's output kept for the error message


class UserInputError(MultitaskBertError):
    """The training process rejected the config or data (its message says what to fix)."""


class TrainingCrashed(RuntimeError):
    """The training process died (killed, preempted, crashed): retried, and it resumes."""


class TrainingOutOfMemory(RuntimeError):
    """CUDA ran out of memory: retried with half the per-device batch, twice the accumulation."""


def halve_batch(config: ExperimentConfig) -> ExperimentConfig:
    """The same effective batch with half the per-device batch (at least 1) and twice the
    gradient accumulation. It starts over (``resume: false``): another batch shape is another
    data plan, so the old checkpoints cannot continue it."""
    training = config.training
    return config.model_copy(update={"training": training.model_copy(update={
        "batch_size": max(1, training.batch_size // 2),
        "task_batch_size": {k: max(1, v // 2) for k, v in training.task_batch_size.items()},
        "gradient_accumulation_steps": training.gradient_accumulation_steps * 2,
        "resume": False,
    })})


def training_command(run_dir: Path, plan: LaunchPlan | None = None) -> list[str]:
    """The command that trains the resolved config of ``run_dir`` (under ``torchrun`` when
    ``plan`` has more than one process)."""
    return (plan or LaunchPlan()).command(
        ["multitask_bert", "train", "--run-dir", str(run_dir)], run_dir)


def launch_plan(config: ExperimentConfig, environ: dict[str, str] | None = None) -> LaunchPlan:
    """The launch plan of a resolved config on this machine: ``training.nproc_per_node``
    processes here, the nodes from the environment (``PET_NNODES``, ...)."""
    return LaunchPlan.resolve(config.training.processes_per_node(), config.run_dir, environ)


def kubernetes_launch() -> KubernetesLaunch | None:
    """The Kubernetes job settings when ``MTB_KUBERNETES_LAUNCH`` names them (and this
    process is not itself a node of a job), else None: train here."""
    path = os.environ.get(LAUNCH_ENV)
    if not path or os.environ.get("PET_NNODES"):
        return None
    try:
        return KubernetesLaunch.load(path)
    except MultitaskBertError as exc:
        raise UserInputError(str(exc)) from None


def planned_world_size(config: ExperimentConfig) -> int:
    """How many processes will train ``config`` (all nodes), as the launcher would plan it
    here; part of the experiment fingerprint."""
    launch = kubernetes_launch()
    if launch is not None:
        return launch.nnodes * launch.processes_per_node(config.training.nproc_per_node)
    return launch_plan(config).world_size


def run_training(
    run_dir: str | Path,
    *,
    on_line: Callable[[str], None] = print,
    on_start: Callable[[list[str]], None] | None = None,
    cwd: str | Path | None = None,
) -> dict[str, Any]:
    """Train the run folder's config in a child process and supervise it.

    Args:
        run_dir: a run folder holding the resolved ``config.yaml``.
        on_line: receives the child's log lines (INFO and above; progress bars are left out).
        on_start: receives the command once the child started.
        cwd: the child's working directory (default: this process's).

    Returns:
        The run's ``metrics.json``.

    Raises:
        UserInputError, TrainingOutOfMemory, TrainingCrashed: see the module docstring.
    """
    run_dir = Path(run_dir)
    if not (run_dir / RUN_CONFIG_FILE).is_file():
        raise UserInputError(f"{run_dir}: no {RUN_CONFIG_FILE}; resolve and write the config "
                             "first (pipeline.resolve(...).write())")
    config = ExperimentConfig.load_run(run_dir)
    launch = kubernetes_launch()
    if launch is not None:  # every node is a pod of one Kubernetes job, followed from here
        code, message = run_job(run_dir, launch, on_line=on_line, on_start=on_start,
                                tracking_uri=config.logging.tracking_uri)
        return classify_exit(code, message, run_dir, config)
    try:
        plan = launch_plan(config)
    except MultitaskBertError as exc:
        raise UserInputError(str(exc)) from None
    command = training_command(run_dir, plan)
    env = dict(os.environ)
    if config.logging.tracking_uri:  # the real URI: the run folder's copy is redacted
        env["MLFLOW_TRACKING_URI"] = config.logging.tracking_uri
    node = f"-node{plan.node_rank}" if plan.is_node_of_many else ""
    pid_file = run_dir / PID_FILE.replace(".pid", f"{node}.pid")
    if plan.distributed:  # every rank's error file, from this launch only
        shutil.rmtree(plan.log_dir(run_dir), ignore_errors=True)
        threads = threads_per_process(plan.nproc_per_node, env)
        if threads:
            env["OMP_NUM_THREADS"] = threads
    # the child dies with this process (SIGKILL of the flow run, its pod evicted): an orphan
    # would go on writing the run folder while the next run of the experiment resumes there.
    # torchrun gets SIGTERM, which it forwards to its ranks; one process gets SIGKILL.
    tie = _die_with_parent(signal.SIGTERM if plan.distributed else signal.SIGKILL)
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1,
                          preexec_fn=tie) as proc:
        pid_file.write_text(str(proc.pid))
        if on_start is not None:
            on_start(command)
        tail: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-_TAIL:], line]
            if " INFO " in line or " WARNING " in line or " ERROR " in line:
                on_line(line)
        code = proc.wait()
    pid_file.unlink(missing_ok=True)
    message = "\n".join(tail[-12:])
    failure = (decisive_failure(rank_failures(plan.log_dir(run_dir)),
                                (EXIT_USER_ERROR, EXIT_OUT_OF_MEMORY))
               if plan.distributed and code != 0 else None)
    if failure is not None:  # any rank's user error, else OOM, as one process's code would
        code, message = failure.exit_code, (
            failure.message.partition(": ")[2] if failure.exit_code == EXIT_USER_ERROR
            else f"{failure.message}\n{message}")
    return classify_exit(code, message, run_dir, config, halve=not plan.is_node_of_many)


def _die_with_parent(signum: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send ``signum`` to the child when this process dies
    (``prctl(PR_SET_PDEATHSIG)``); None elsewhere. The ctypes function is looked up before
    the fork, so the child only makes the system call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    return functools.partial(prctl, pr_set_pdeathsig, int(signum), 0, 0, 0)


def classify_exit(code: int, message: str, run_dir: Path, config: ExperimentConfig, *,
                  halve: bool = True) -> dict[str, Any]:
    """The outcome of a training process's (or job's) exit code (see the module docstring):
    ``metrics.json`` on 0, else the exception to raise. ``halve``: rewrite the run folder's
    config with half the per-device batch on an out-of-memory exit."""
    if code == EXIT_USER_ERROR:
        raise UserInputError(message)
    if code == EXIT_OUT_OF_MEMORY:
        if not halve:
            raise TrainingOutOfMemory(f"CUDA out of memory on this node; the job's "
                                      f"supervisor halves the batch\n{message}")
        halvings = _read_int(run_dir / OOM_FILE) + 1
        halve_batch(config).write()
        write_text_atomic(run_dir / OOM_FILE, str(halvings))
        raise TrainingOutOfMemory(f"CUDA out of memory; retrying with a per-device batch "
                                  f"halved {halvings} time(s)\n{message}")
    if code != 0:
        raise TrainingCrashed(f"the training process exited with {code}; a retry resumes "
                              f"from the newest checkpoint in {run_dir}\n{message}")
    metrics = run_dir / "metrics.json"
    if not metrics.is_file() and not halve:  # a node whose ranks did not include rank 0,
        return {}  # and whose view of the shared folder lags: the supervisor reads it
    return json.loads(metrics.read_text())


def _read_int(path: Path) -> int:
    return int(path.read_text()) if path.is_file() else 0
