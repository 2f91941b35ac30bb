"""Where and how many training processes run: the launch plan, and ``torchrun``'s report.

A :class:`LaunchPlan` says how many processes train on this machine
(``training.nproc_per_node``), on how many machines (nodes), which node this is, and where the
nodes meet. One process on one node is a plain child; anything more runs the same entry point
under ``torchrun`` (``python -m torch.distributed.run``):

* one node: ``--standalone`` (a c10d rendezvous on a free local port);
* several nodes: ``--nnodes``, ``--node-rank``, ``--rdzv-backend c10d``, ``--rdzv-endpoint``
  and ``--rdzv-id``, read from the environment under the names ``torchrun`` itself reads
  (``PET_NNODES``, ``PET_NODE_RANK``, ``PET_RDZV_ENDPOINT``, ``PET_RDZV_ID``; a Kubernetes
  indexed Job's ``JOB_COMPLETION_INDEX`` is the node rank when ``PET_NODE_RANK`` is not set).
  A Prefect deployment sets them as job variables (``env``). Node 0 hosts the rendezvous
  store (``is_host``); global ranks are assigned by the rendezvous, so global rank 0 may
  live on any node: the run folder must be storage every node shares.

``torchrun`` runs with ``--max-restarts 0``: the pipeline's own retry resumes from the newest
checkpoint. When a rank fails, ``torchrun`` stops the others and exits 1. Each rank has its
own error file (``TORCHELASTIC_ERROR_FILE``, under ``--log-dir``) where the CLI records a
failure with the exit code it chose (``errorCode``: 2 user error, 3 out of memory).
:func:`rank_failures` reads them back and :func:`decisive_failure` picks the one that
decides: a user error on any rank, else an out-of-memory error on any rank, else a crash.
(``torchrun``'s own "root cause" is the earliest failure by a timestamp in whole seconds: the
rank that ran out of memory and the rank whose collective broke because of it tie.) A rank
killed by a signal records nothing: a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from multitask_bert.errors import ConfigError

LOG_DIR = "torchrun"
"""``torchrun``'s ``--log-dir`` in the run folder (one sub-folder per node of many): each
rank's ``error.json``."""

NNODES, NODE_RANK, RDZV_ENDPOINT, RDZV_ID = (
    "PET_NNODES", "PET_NODE_RANK", "PET_RDZV_ENDPOINT", "PET_RDZV_ID")
"""The environment variables ``torchrun`` reads its multi-node arguments from."""
JOB_INDEX = "JOB_COMPLETION_INDEX"
"""A Kubernetes indexed Job's pod index: the node rank."""


@dataclass(frozen=True)
class LaunchPlan:
    """How many training processes run where (see the module docstring)."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    """``host:port`` of the c10d rendezvous (several nodes)."""
    rdzv_id: str | None = None
    """The job's id: every node of one job gives the same one."""

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_node_of_many(self) -> bool:
        """One node of a multi-node job (a supervisor above it retries the whole job)."""
        return self.nnodes > 1

    @classmethod
    def resolve(cls, nproc_per_node: int, run_dir: Path,
                environ: Mapping[str, str] | None = None) -> LaunchPlan:
        """The plan for ``nproc_per_node`` processes here, nodes from ``environ``.

        Raises:
            ConfigError: a malformed or incomplete multi-node setting (names the variable).
        """
        environ = os.environ if environ is None else environ
        nnodes = _env_int(environ, NNODES, 1, minimum=1)
        if nnodes == 1:
            return cls(nproc_per_node=nproc_per_node)
        rank_name = NODE_RANK if environ.get(NODE_RANK) else JOB_INDEX
        node_rank = _env_int(environ, rank_name, 0, minimum=0)
        if node_rank >= nnodes:
            raise ConfigError(f"{rank_name}={node_rank}: the node rank must be below "
                              f"{NNODES}={nnodes}")
        endpoint = environ.get(RDZV_ENDPOINT, "").strip()
        if not endpoint or ":" not in endpoint:
            raise ConfigError(f"{NNODES}={nnodes} needs {RDZV_ENDPOINT}=host:port, the c10d "
                              "rendezvous every node reaches (node 0 hosts it), e.g. "
                              "node0.example:29500")
        rdzv_id = environ.get(RDZV_ID) or "mtb-" + hashlib.sha256(
            str(run_dir).encode()).hexdigest()[:12]
        return cls(nproc_per_node, nnodes, node_rank, endpoint, rdzv_id)

    def command(self, module_args: list[str], run_dir: Path) -> list[str]:
        """``python -m <module_args>``, under ``torchrun`` when more than one process (its
        ``--log-dir`` in ``run_dir``: :meth:`log_dir`)."""
        if not self.distributed:
            return [sys.executable, "-m", *module_args]
        command = [sys.executable, "-m", "torch.distributed.run",
                   f"--nproc-per-node={self.nproc_per_node}", "--max-restarts=0",
                   f"--log-dir={self.log_dir(run_dir)}",  # every rank's error file
                   "--local-ranks-filter=0"]  # this node's first rank speaks for it
        if self.nnodes == 1:
            command.append("--standalone")
        else:
            is_host = "true" if self.node_rank == 0 else "false"
            command += [f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}",
                        "--rdzv-backend=c10d", f"--rdzv-endpoint={self.rdzv_endpoint}",
                        f"--rdzv-id={self.rdzv_id}", f"--rdzv-conf=is_host={is_host}"]
        return [*command, "-m", *module_args]

    def log_dir(self, run_dir: Path) -> Path:
        """Where this node's ``torchrun`` keeps the ranks' error files."""
        return run_dir / LOG_DIR / (f"node-{self.node_rank}" if self.nnodes > 1 else "")

    def describe(self) -> str:
        if not self.distributed:
            return "1 process"
        where = (f" on node {self.node_rank} of {self.nnodes} (rendezvous "
                 f"{self.rdzv_endpoint}, id {self.rdzv_id})" if self.nnodes > 1 else "")
        return (f"{self.world_size} processes ({self.nproc_per_node} per node){where} under "
                "torchrun")


@dataclass(frozen=True)
class RankFailure:
    """A failed rank as its error file records it."""

    exit_code: int
    """The code the rank exited with (``errorCode``; 1 when it recorded none)."""
    message: str
    """``<ExceptionType>: rank <n>: <message>``."""


def rank_failures(log_dir: Path) -> list[RankFailure]:
    """The failures the ranks recorded under ``torchrun``'s ``--log-dir`` (any attempt)."""
    failures = []
    for path in sorted(log_dir.rglob("error.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        message = data.get("message")
        if isinstance(message, dict):
            failures.append(RankFailure(int(message.get("errorCode") or 1),
                                        str(message.get("message", ""))))
        elif message:
            failures.append(RankFailure(1, str(message)))
    return failures


def decisive_failure(failures: list[RankFailure], codes: tuple[int, ...]) -> RankFailure | None:
    """The first failure whose exit code comes first in ``codes`` (the classified ones, by
    precedence), else the first failure, else None."""
    for code in codes:
        for failure in failures:
            if failure.exit_code == code:
                return failure
    return failures[0] if failures else None


def error_record(exc: BaseException, exit_code: int, rank: str) -> dict:
    """What a rank writes to its ``TORCHELASTIC_ERROR_FILE``: ``torchrun``'s format (as
    ``ErrorHandler.record_exception`` writes it) plus the exit code it chose."""
    import time
    import traceback

    return {"message": {
        "message": f"{type(exc).__name__}: rank {rank}: {exc}",
        "errorCode": exit_code,
        "extraInfo": {"py_callstack": traceback.format_exc(),
                      "timestamp": str(int(time.time()))},
    }}


def threads_per_process(nproc_per_node: int, environ: Mapping[str, str]) -> str | None:
    """``OMP_NUM_THREADS`` for each of ``nproc_per_node`` processes, unless the user set it:
    this machine's cores shared out (``torchrun`` alone would give each process 1)."""
    if nproc_per_node <= 1 or environ.get("OMP_NUM_THREADS"):
        return None
    return str(max(1, (os.cpu_count() or 1) // nproc_per_node))


def _env_int(environ: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value}: must be at least {minimum}")
    return value
