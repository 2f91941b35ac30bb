"""The multi-node Kubernetes job: the manifest (checked against Kubernetes' own schemas) and
submit-and-follow through the real ``kubernetes`` client against a fake API server (no
cluster here; tests/training/fake_kubernetes.py says what it stands in for)."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from multitask_bert import pipeline
from multitask_bert.config import ExperimentConfig
from multitask_bert.training.kubernetes import KubernetesLaunch, job_name, render
from multitask_bert.training.launcher import UserInputError, planned_world_size, run_training
from tests.conftest import REPO, tiny_config_dict
from tests.training.fake_kubernetes import FakeKubernetes

K8S = REPO / "deployments" / "kubernetes"
EXAMPLE_RUN = Path("/opt/multitask-bert/runs/quickstart/2x8")
EXAMPLE_URI = "http://mlflow.multitask-bert:5000"
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())  # oldest with what we use, newest


def test_the_rendered_job_is_valid_kubernetes_and_wires_the_rendezvous():
    launch = KubernetesLaunch.load(K8S / "launch-2x8.yaml")
    service, job = render(EXAMPLE_RUN, launch, tracking_uri=EXAMPLE_URI)
    for version in VERSIONS:
        for manifest in (service, job):
            kubernetes_validate.validate(manifest, version, strict=True)
    name = job_name(EXAMPLE_RUN)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == (
        "Indexed", 2, 2)
    assert spec["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    assert pod["subdomain"] == service["metadata"]["name"] == name
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"job-name": name}
    container = pod["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["PET_NNODES"] == "2" and env["PET_RDZV_ID"] == name
    assert env["PET_RDZV_ENDPOINT"] == f"{name}-0.{name}:29500"  # pod 0 through the service
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["command"][-4:] == ["multitask_bert", "launch", "--run-dir",
                                         str(EXAMPLE_RUN)]
    assert len(name) <= 50 and job_name(EXAMPLE_RUN) == name  # stable: a retry finds it


def test_the_shipped_manifests_are_valid_and_current():
    text = (K8S / "multinode-job.yaml").read_text()
    shipped = list(yaml.safe_load_all(text))
    launch = KubernetesLaunch.load(K8S / "launch-2x8.yaml")
    assert shipped == render(EXAMPLE_RUN, launch, tracking_uri=EXAMPLE_URI), (
        "deployments/kubernetes/multinode-job.yaml is stale: regenerate it with the command "
        "in its header")
    for name in ("rbac.yaml", "storage.yaml"):
        for manifest in yaml.safe_load_all((K8S / name).read_text()):
            if manifest:
                kubernetes_validate.validate(manifest, VERSIONS[-1], strict=True)
    pool = json.loads((K8S / "launcher-pool.json").read_text())
    assert "volume_claim" in pool["variables"]["properties"]
    deployment = yaml.safe_load((K8S / "prefect.yaml").read_text())["deployments"][0]
    path = deployment["work_pool"]["job_variables"]["env"]["MTB_KUBERNETES_LAUNCH"]
    assert (REPO / Path(path).relative_to("/opt/multitask-bert")).is_file()


def test_credentials_never_reach_the_manifest():
    launch = KubernetesLaunch(image="img", env_from_secrets=["mlflow-credentials"])
    _, job = render(EXAMPLE_RUN, launch, tracking_uri="http://user:pa55word@mlflow:5000")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "pa55word" not in json.dumps(job)
    assert container["envFrom"] == [{"secretRef": {"name": "mlflow-credentials"}}]


def test_a_bad_launch_file_names_the_field(tmp_path, monkeypatch):
    (tmp_path / "launch.yaml").write_text("image: x\nnnodes: 0\ngpus: 8\n")
    with pytest.raises(Exception, match=r"launch.yaml: nnodes: .*greater than or equal to 1.*"
                                         r"gpus: Extra inputs"):
        KubernetesLaunch.load(tmp_path / "launch.yaml")


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """The fake API server, reached the way a user reaches a cluster: a kubeconfig."""
    with FakeKubernetes(tmp_path, cwd=REPO) as fake:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": fake.host}}],
            "users": [{"name": "fake", "user": {"token": "fake"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}))
        launch = tmp_path / "launch.yaml"
        launch.write_text(yaml.safe_dump({"image": "multitask-bert:test", "nnodes": 2,
                                          "gpus_per_node": 0, "poll_seconds": 0.5}))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setenv("MTB_KUBERNETES_LAUNCH", str(launch))
        monkeypatch.setenv("PYTHONPATH", str(REPO))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield fake


def started(task_dir: Path, tmp_path: Path) -> ExperimentConfig:
    data = tiny_config_dict(task_dir, tmp_path, epochs=1, batch_size=4)
    data["tasks"] = [t for t in data["tasks"] if t["name"] in ("sentiment", "pairs")]
    config = ExperimentConfig.from_dict(data).resolve()
    pipeline.start(config)
    return config


@pytest.mark.slow
def test_the_train_step_submits_a_two_node_job_and_follows_it(cluster, task_dir, tmp_path):
    config = started(task_dir, tmp_path)
    assert planned_world_size(config) == 2  # 2 pods x 1 process (CPU pods)
    lines: list[str] = []
    metrics = run_training(config.run_dir, on_line=lines.append)
    assert metrics["world_size"] == 2 and metrics["global_step"] == 6
    first, second = metrics["rank_weight_checksums"]
    assert first == second
    assert any(line.startswith("submitted job default/mtb-") for line in lines)
    assert any("training tiny on sentiment, pairs" in line for line in lines)  # pod 0's log
    # the step retried after the job finished: it is found again, not started twice
    again = run_training(config.run_dir, on_line=lines.append)
    assert again["global_step"] == 6 and cluster.jobs_created == 1


@pytest.mark.slow
def test_a_user_error_on_a_node_fails_the_job_with_its_message(cluster, task_dir, tmp_path):
    bad = task_dir / "sentiment" / "train.jsonl"
    bad.write_text(bad.read_text() + '{"text": "", "label": "pos"}\n')
    config = started(task_dir, tmp_path)
    with pytest.raises(UserInputError, match=r"exited with 2: (?s:.*)line 25, field 'text': "
                                             r"empty text"):
        run_training(config.run_dir, on_line=lambda line: None)


@pytest.mark.parametrize(("codes", "expected"), [
    ((143, 1), 1),    # the pod Kubernetes stopped is not the cause
    ((143, 3), 3),    # out of memory on one node
    ((1, 2), 2),      # a user error anywhere decides
    ((137, 143), 137),
])
def test_the_failed_pod_that_decides(codes, expected):
    from kubernetes import client

    from multitask_bert.training.kubernetes import _failure

    pods = [client.V1Pod(metadata=client.V1ObjectMeta(name=f"p-{i}"), status=client.V1PodStatus(
        phase="Failed", container_statuses=[client.V1ContainerStatus(
            name="train", image="i", image_id="", ready=False, restart_count=0,
            state=client.V1ContainerState(terminated=client.V1ContainerStateTerminated(
                exit_code=code, message=f"log of {i}")))]))
        for i, code in enumerate(codes)]
    job = client.V1Job(metadata=client.V1ObjectMeta(name="j"), status=client.V1JobStatus())
    code, message = _failure(pods, job)
    assert code == expected
    assert message.startswith(f"pod p-{codes.index(expected)} exited with {expected}")
