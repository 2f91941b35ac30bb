"""Training as a multi-node Kubernetes job, submitted and followed like the local child.

When the flow cannot start every node itself, the pipeline's ``train`` step
(:func:`multitask_bert.training.launcher.run_training`) hands the run folder to
:func:`run_job` (``MTB_KUBERNETES_LAUNCH`` names a :class:`KubernetesLaunch` YAML). It
creates, through the Kubernetes API:

* an **indexed Job** (``completionMode: Indexed``, ``completions = parallelism = nnodes``,
  ``backoffLimit: 0``): pod *k* runs ``python -m multitask_bert launch --run-dir <run>``, the
  same launcher as one machine, as node *k* (``JOB_COMPLETION_INDEX``) of ``PET_NNODES``,
  with ``torchrun`` on its GPUs;
* a **headless Service** named like the Job (the pods' ``subdomain``), so pod 0 is
  ``<job>-0.<job>`` in DNS: the c10d rendezvous endpoint every node dials.

Built-in ``batch/v1`` objects, not a Kubeflow ``PyTorchJob``: they need no operator on the
cluster, and an indexed Job gives each pod a stable index and hostname, which is all a c10d
rendezvous needs (``torchrun`` does the rest).

Then it follows the job as the local launcher follows its child: pod 0's log lines go to the
callback, and the end is an exit code with the same meaning: 0 done, 2 a user error on any
node (the node's message), 3 out of memory on any node, anything else a crash (the next
attempt resumes from the newest checkpoint). ``backoffLimit: 0``: one failed node fails the
Job and Kubernetes stops the others; retrying is the pipeline's business, as locally. A job
that still runs when the step is retried (the flow process died) is followed again, not
started twice; a failed one is deleted and started again.

The run folder and the token cache must be on storage the flow and every node mount at the
same path (a ``ReadWriteMany`` volume; see ``deployments/kubernetes/``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from multitask_bert.errors import EXIT_OUT_OF_MEMORY, EXIT_USER_ERROR, ConfigError

log = logging.getLogger("multitask_bert.training")

LAUNCH_ENV = "MTB_KUBERNETES_LAUNCH"
"""The environment variable naming a :class:`KubernetesLaunch` YAML: set, the train step
submits the run to Kubernetes instead of starting a local child."""

_TIMEOUT = 60  # seconds for one API call (a log stream has none)
_USER_ERROR_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                       "CreateContainerConfigError", "CreateContainerError"}


class Mount(BaseModel):
    """A persistent volume claim mounted into every pod."""

    model_config = ConfigDict(extra="forbid")

    claim: str
    """The PersistentVolumeClaim (``ReadWriteMany``: every node and the flow mount it)."""
    mount_path: str
    """Where the pods see it: the same path as in the flow's pod (run folders are absolute)."""
    sub_path: str | None = None


class KubernetesLaunch(BaseModel):
    """How the train step runs a multi-node job on Kubernetes (a YAML file, see
    ``deployments/kubernetes/launch-2x8.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    image: str
    """The project's image (``deployments/Dockerfile``), pushed where the cluster pulls."""
    nnodes: int = Field(default=2, ge=1)
    """Pods (nodes) in the job."""
    gpus_per_node: int = Field(default=8, ge=0)
    """``nvidia.com/gpu`` per pod; ``training.nproc_per_node: auto`` takes them all (0: CPU
    pods, one process each)."""
    namespace: str = "default"
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    cpu: str | None = None
    """CPU request and limit per pod, e.g. ``"32"``."""
    memory: str | None = None
    """Memory request and limit per pod, e.g. ``"256Gi"``."""
    shm_size: str = "16Gi"
    """A memory-backed ``/dev/shm`` (NCCL and DataLoader workers need more than 64 MB)."""
    mounts: list[Mount] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=lambda: [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    service_account: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    """More environment variables for the training pods (e.g. ``NCCL_SOCKET_IFNAME``)."""
    env_from_secrets: list[str] = Field(default_factory=list)
    """Secrets whose keys become environment variables: put a tracking URI with
    credentials here (``MLFLOW_TRACKING_URI``); it is never written into the manifest."""
    working_dir: str = "/opt/multitask-bert"
    python: str = "python"
    rendezvous_port: int = Field(default=29500, ge=1, le=65535)
    ttl_seconds_after_finished: int | None = Field(default=7 * 24 * 3600, ge=0)
    start_timeout_s: float = Field(default=1800, gt=0)
    """How long pods may stay Pending (no node with free GPUs) before the attempt fails."""
    poll_seconds: float = Field(default=5, gt=0)
    labels: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> KubernetesLaunch:
        """Read a launch YAML.

        Raises:
            ConfigError: naming the file and the field.
        """
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{LAUNCH_ENV}={path}: file not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        try:
            return cls.model_validate(raw or {})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                 for e in exc.errors())
            raise ConfigError(f"{path}: {problems}") from None

    def processes_per_node(self, nproc_per_node: int | str) -> int:
        if nproc_per_node != "auto":
            return int(nproc_per_node)
        return max(1, self.gpus_per_node)


def job_name(run_dir: Path) -> str:
    """A DNS-1123 name for the run's job and service, stable per run folder (a retry finds
    its job again); short enough for pod hostnames ``<name>-<index>``."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run_dir.name.lower()).strip("-")[:30].strip("-")
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:8]
    return f"mtb-{slug}-{digest}" if slug else f"mtb-{digest}"


def render(run_dir: Path, launch: KubernetesLaunch, *, tracking_uri: str | None = None
           ) -> list[dict[str, Any]]:
    """The headless Service and the indexed Job that train ``run_dir`` on ``launch.nnodes``
    pods. ``tracking_uri`` goes into the pods' environment unless it carries credentials
    (give those through ``env_from_secrets``)."""
    from multitask_bert.tracking import redact_uri

    name = job_name(run_dir)
    labels = {"app.kubernetes.io/name": "multitask-bert", "multitask-bert/run": name,
              **launch.labels}
    env = {"PET_NNODES": str(launch.nnodes),
           "PET_RDZV_ENDPOINT": f"{name}-0.{name}:{launch.rendezvous_port}",
           "PET_RDZV_ID": name, "PYTHONUNBUFFERED": "1", **launch.env}
    if tracking_uri and redact_uri(tracking_uri) == tracking_uri:
        env.setdefault("MLFLOW_TRACKING_URI", tracking_uri)
    claims = list(dict.fromkeys(m.claim for m in launch.mounts))  # one volume per claim
    resources: dict[str, dict[str, str]] = {"limits": {}, "requests": {}}
    if launch.gpus_per_node:
        resources["limits"]["nvidia.com/gpu"] = str(launch.gpus_per_node)
    for key, value in (("cpu", launch.cpu), ("memory", launch.memory)):
        if value:
            resources["limits"][key] = resources["requests"][key] = value
    container: dict[str, Any] = {
        "name": "train",
        "image": launch.image,
        "imagePullPolicy": launch.image_pull_policy,
        "command": [launch.python, "-m", "multitask_bert", "launch", "--run-dir", str(run_dir)],
        "workingDir": launch.working_dir,
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "ports": [{"name": "rendezvous", "containerPort": launch.rendezvous_port}],
        "resources": {k: v for k, v in resources.items() if v},
        # a failed node's last log lines become its termination message: the error to show
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}] + [
            {"name": f"data-{claims.index(m.claim)}", "mountPath": m.mount_path,
             **({"subPath": m.sub_path} if m.sub_path else {})} for m in launch.mounts],
    }
    if launch.env_from_secrets:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in launch.env_from_secrets]
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": launch.shm_size}}]
    volumes += [{"name": f"data-{i}", "persistentVolumeClaim": {"claimName": claim}}
                for i, claim in enumerate(claims)]
    pod_spec: dict[str, Any] = {
        "subdomain": name,  # <name>-<index>.<name>: the headless service's DNS records
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
    }
    if launch.node_selector:
        pod_spec["nodeSelector"] = launch.node_selector
    if launch.tolerations and launch.gpus_per_node:
        pod_spec["tolerations"] = launch.tolerations
    if launch.service_account:
        pod_spec["serviceAccountName"] = launch.service_account
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": launch.nnodes,
        "parallelism": launch.nnodes,
        "backoffLimit": 0,  # a failed node fails the job; the pipeline's retry resumes
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if launch.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = launch.ttl_seconds_after_finished
    def meta() -> dict[str, Any]:
        return {"name": name, "namespace": launch.namespace, "labels": dict(labels)}

    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": meta(),
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {"job-name": name},
                 "ports": [{"name": "rendezvous", "port": launch.rendezvous_port}]},
    }
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(), "spec": job_spec}
    return [service, job]


def run_job(
    run_dir: Path,
    launch: KubernetesLaunch,
    *,
    on_line: Callable[[str], None] = print,
    on_start: Callable[[list[str]], None] | None = None,
    tracking_uri: str | None = None,
    api_client: Any = None,
) -> tuple[int, str]:
    """Submit (or find again) the run's job, follow it to its end.

    Args:
        run_dir: the run folder (on the shared volume).
        launch: the job's settings.
        on_line: receives pod 0's log lines (INFO and above).
        on_start: receives the pods' command once the job exists.
        tracking_uri: the run's MLflow store (into the pods' environment, see :func:`render`).
        api_client: a ``kubernetes.client.ApiClient`` (default: in-cluster config, else
            ``~/.kube/config``).

    Returns:
        The exit code (see the module docstring) and a message (the deciding pod's).
    """
    from kubernetes import client

    api = api_client or _default_api_client()
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    service, job = render(run_dir, launch, tracking_uri=tracking_uri)
    name, namespace = job["metadata"]["name"], launch.namespace
    existing = _read_job(batch, name, namespace)
    if existing is not None and _finished(existing) == "Complete":
        on_line(f"job {namespace}/{name} already completed")
        return 0, ""
    if existing is not None and _finished(existing) == "Failed":
        on_line(f"job {namespace}/{name} failed before; deleting it to start again")
        _delete(batch, core, name, namespace)
        existing = None
    if existing is None:
        created = batch.create_namespaced_job(namespace, job)
        service["metadata"]["ownerReferences"] = [{  # deleted with the job
            "apiVersion": "batch/v1", "kind": "Job", "name": name,
            "uid": created.metadata.uid, "controller": False}]
        _create_service(core, namespace, service)
        on_line(f"submitted job {namespace}/{name}: {launch.nnodes} pod(s) x "
                f"{launch.gpus_per_node} GPU(s), image {launch.image}")
    else:
        on_line(f"following job {namespace}/{name}, which is running already")
    if on_start is not None:
        on_start(job["spec"]["template"]["spec"]["containers"][0]["command"])
    return _follow(batch, core, name, namespace, launch, on_line)


def _follow(batch: Any, core: Any, name: str, namespace: str, launch: KubernetesLaunch,
            on_line: Callable[[str], None]) -> tuple[int, str]:
    streaming: threading.Thread | None = None
    started = time.monotonic()
    last_wait = ""
    while True:
        job = _read_job(batch, name, namespace)
        if job is None:
            return 1, f"job {namespace}/{name} disappeared (deleted from outside?)"
        pods = _pods(core, name, namespace)
        state = _finished(job)
        if state is not None:
            if streaming is not None:
                streaming.join(timeout=30)
            if state == "Complete":
                return 0, ""
            return _failure(pods, job)
        zero = next((p for p in pods if _index(p) == "0"), None)
        if streaming is None and zero is not None and zero.status.phase != "Pending":
            streaming = threading.Thread(target=_stream_log, args=(
                core, zero.metadata.name, namespace, on_line), daemon=True)
            streaming.start()
        waiting = _waiting_reasons(pods)
        user_error = next((w for w in waiting if w[1] in _USER_ERROR_WAITING), None)
        if user_error is not None:
            _delete(batch, core, name, namespace)
            return EXIT_USER_ERROR, (f"pod {user_error[0]} cannot start: {user_error[1]}: "
                                     f"{user_error[2]}. Check `image` in {LAUNCH_ENV} "
                                     "(and the registry's pull secret)")
        if not pods or all(p.status.phase == "Pending" for p in pods):
            if time.monotonic() - started > launch.start_timeout_s:
                _delete(batch, core, name, namespace)
                return 1, (f"job {namespace}/{name}: pods still Pending after "
                           f"{launch.start_timeout_s:.0f} s ({_pending_reason(pods)}); deleted")
            reason = _pending_reason(pods)
            if reason != last_wait:
                on_line(f"waiting for pods of {name} to start: {reason}")
                last_wait = reason
        time.sleep(launch.poll_seconds)


def _failure(pods: list[Any], job: Any) -> tuple[int, str]:
    """The code and message that decide a failed job: a user error on any pod, else an
    out-of-memory exit on any pod, else the first failed pod's."""
    failed = []
    for pod in pods:
        for status in pod.status.container_statuses or []:
            terminated = status.state.terminated if status.state else None
            if terminated is not None and terminated.exit_code:
                failed.append((terminated.exit_code, f"pod {pod.metadata.name} exited with "
                               f"{terminated.exit_code}: {(terminated.message or '').strip()}"))
    for code in (EXIT_USER_ERROR, EXIT_OUT_OF_MEMORY):
        for exit_code, message in failed:
            if exit_code == code:
                return code, message
    # a pod Kubernetes stopped because another failed exits 143 (SIGTERM) or 137: not the cause
    causes = [f for f in failed if f[0] not in (137, 143)] or failed
    if causes:
        return causes[0][0], causes[0][1]
    conditions = [c for c in job.status.conditions or [] if c.type == "Failed"]
    reason = f"{conditions[0].reason}: {conditions[0].message}" if conditions else "unknown"
    return 1, f"job {job.metadata.name} failed ({reason})"


def _stream_log(core: Any, pod: str, namespace: str, on_line: Callable[[str], None]) -> None:
    try:
        response = core.read_namespaced_pod_log(pod, namespace, follow=True,
                                                _preload_content=False)
        buffer = b""
        for chunk in response.stream(4096):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                text = line.decode("utf-8", "replace").rstrip()
                if " INFO " in text or " WARNING " in text or " ERROR " in text:
                    on_line(text)
    except Exception as exc:  # logs are a convenience; the job's status decides
        log.warning("log stream of pod %s ended: %s", pod, exc)


def _read_job(batch: Any, name: str, namespace: str) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return batch.read_namespaced_job(name, namespace, _request_timeout=_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _finished(job: Any) -> str | None:
    for condition in (job.status.conditions or []) if job.status else []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return condition.type
    return None


def _pods(core: Any, name: str, namespace: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={name}",
                                         _request_timeout=_TIMEOUT).items)


def _index(pod: Any) -> str | None:
    annotations = pod.metadata.annotations or {}
    labels = pod.metadata.labels or {}
    return (annotations.get("batch.kubernetes.io/job-completion-index")
            or labels.get("batch.kubernetes.io/job-completion-index"))


def _waiting_reasons(pods: list[Any]) -> list[tuple[str, str, str]]:
    found = []
    for pod in pods:
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting if status.state else None
            if waiting is not None and waiting.reason:
                found.append((pod.metadata.name, waiting.reason, waiting.message or ""))
    return found


def _pending_reason(pods: list[Any]) -> str:
    for pod in pods:
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False":
                return f"{condition.reason}: {condition.message}"
    return ", ".join(sorted({p.status.phase for p in pods})) or "no pods yet"


def _create_service(core: Any, namespace: str, service: dict[str, Any]) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        core.create_namespaced_service(namespace, service)
    except ApiException as exc:
        if exc.status != 409:  # exists already: the job's earlier attempt made it
            raise


def _delete(batch: Any, core: Any, name: str, namespace: str) -> None:
    """Delete the job (its pods go with it) and its service; wait until the job is gone."""
    from kubernetes.client.exceptions import ApiException

    for call in (lambda: batch.delete_namespaced_job(name, namespace,
                                                     propagation_policy="Foreground"),
                 lambda: core.delete_namespaced_service(name, namespace)):
        try:
            call()
        except ApiException as exc:
            if exc.status != 404:
                raise
    deadline = time.monotonic() + 300
    while _read_job(batch, name, namespace) is not None and time.monotonic() < deadline:
        time.sleep(1)


def _default_api_client() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:  # $KUBECONFIG as it is now (the client reads it once, at import)
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        except (config.ConfigException, FileNotFoundError) as exc:
            raise ConfigError(f"{LAUNCH_ENV} is set but no Kubernetes API is configured: run "
                              "the flow in a pod with a service account (deployments/"
                              f"kubernetes/rbac.yaml) or with a kubeconfig ({exc})") from None
    return client.ApiClient()
