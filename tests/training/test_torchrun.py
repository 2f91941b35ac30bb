"""The launch plan (processes, nodes, rendezvous) and torchrun's root-cause error file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from multitask_bert.errors import ConfigError
from multitask_bert.training.torchrun import (
    LaunchPlan,
    RankFailure,
    decisive_failure,
    error_record,
    rank_failures,
    threads_per_process,
)

RUN = Path("/runs/exp/run-1")
TRAIN = ["multitask_bert", "train", "--run-dir", str(RUN)]


def test_one_process_is_a_plain_child():
    plan = LaunchPlan.resolve(1, RUN, environ={})
    assert (plan.world_size, plan.distributed, plan.is_node_of_many) == (1, False, False)
    assert plan.command(TRAIN, RUN) == [sys.executable, "-m", *TRAIN]


def test_several_processes_on_one_node_use_a_standalone_rendezvous():
    plan = LaunchPlan.resolve(4, RUN, environ={})
    command = plan.command(TRAIN, RUN)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=4" in command and "--standalone" in command
    assert "--max-restarts=0" in command  # the pipeline's retry resumes, not torchrun
    assert command[-5:] == ["-m", *TRAIN]
    assert any(arg.startswith("--log-dir=") for arg in command)
    assert plan.world_size == 4 and not plan.is_node_of_many


def test_nodes_come_from_torchruns_own_environment_variables():
    env = {"PET_NNODES": "2", "PET_NODE_RANK": "1", "PET_RDZV_ENDPOINT": "node0:29500",
           "PET_RDZV_ID": "job-7"}
    plan = LaunchPlan.resolve(8, RUN, environ=env)
    assert (plan.world_size, plan.node_rank, plan.is_node_of_many) == (16, 1, True)
    command = plan.command(TRAIN, RUN)
    for arg in ("--nnodes=2", "--node-rank=1", "--rdzv-backend=c10d",
                "--rdzv-endpoint=node0:29500", "--rdzv-id=job-7", "--rdzv-conf=is_host=false"):
        assert arg in command
    assert "--standalone" not in command


def test_an_indexed_jobs_completion_index_is_the_node_rank():
    env = {"PET_NNODES": "2", "JOB_COMPLETION_INDEX": "0", "PET_RDZV_ENDPOINT": "j-0.svc:29500"}
    plan = LaunchPlan.resolve(1, RUN, environ=env)
    assert plan.node_rank == 0 and "--rdzv-conf=is_host=true" in plan.command(TRAIN, RUN)
    # the same run folder gives every node the same rendezvous id
    assert plan.rdzv_id == LaunchPlan.resolve(1, RUN, environ={**env, "JOB_COMPLETION_INDEX":
                                                               "1"}).rdzv_id


@pytest.mark.parametrize(("env", "message"), [
    ({"PET_NNODES": "2"}, r"needs PET_RDZV_ENDPOINT=host:port"),
    ({"PET_NNODES": "two"}, r"PET_NNODES='two': expected a whole number"),
    ({"PET_NNODES": "2", "PET_NODE_RANK": "2", "PET_RDZV_ENDPOINT": "h:1"},
     r"PET_NODE_RANK=2: the node rank must be below PET_NNODES=2"),
    ({"PET_NNODES": "0"}, r"PET_NNODES=0: must be at least 1"),
])
def test_bad_node_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        LaunchPlan.resolve(1, RUN, environ=env)


def test_the_ranks_error_files_are_read_back_and_a_user_error_decides(tmp_path):
    assert rank_failures(tmp_path) == []  # no rank recorded anything (e.g. killed)
    files = {0: (RuntimeError("Connection closed by peer"), 1),
             1: (MemoryError("CUDA out of memory"), 3)}
    for rank, (exc, code) in files.items():
        folder = tmp_path / "run_x" / "attempt_0" / str(rank)
        folder.mkdir(parents=True)
        (folder / "error.json").write_text(json.dumps(error_record(exc, code, str(rank))))
    failures = rank_failures(tmp_path)
    assert [f.exit_code for f in failures] == [1, 3]
    assert failures[1].message == "MemoryError: rank 1: CUDA out of memory"
    # out of memory on rank 1 decides over the broken collective it caused on rank 0
    assert decisive_failure(failures, (2, 3)) == failures[1]
    user = RankFailure(2, "ConfigError: rank 0: bad key")
    assert decisive_failure([*failures, user], (2, 3)) == user
    assert decisive_failure(failures[:1], (2, 3)) == failures[0]
    (tmp_path / "run_x" / "attempt_0" / "0" / "error.json").write_text("{torn")
    assert [f.exit_code for f in rank_failures(tmp_path)] == [3]


def test_threads_are_shared_out_unless_the_user_set_them():
    assert threads_per_process(1, {}) is None
    assert threads_per_process(2, {"OMP_NUM_THREADS": "3"}) is None
    assert int(threads_per_process(2, {})) >= 1
