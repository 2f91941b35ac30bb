"""FAKE on purpose: a Kubernetes API server, because no cluster can be reached here.

Only what :mod:`multitask_bert.training.kubernetes` calls, over real HTTP on loopback, so the
real ``kubernetes`` client (its URLs, JSON and models) is exercised: create/read/delete a Job,
create/delete a Service, list a Job's pods, follow a pod's log. A created indexed Job "runs"
its pods as local processes (the container's command, ``python`` being this interpreter) with
the container's environment plus ``JOB_COMPLETION_INDEX``, standing in for the kubelet. It
stands in for cluster DNS too: the rendezvous endpoint ``<job>-0.<job>:<port>`` becomes
``127.0.0.1:<a free port>``. The Job semantics the launcher relies on are kept: pods run in
parallel; the Job is Complete when every pod exited 0; with ``backoffLimit: 0`` the first
failed pod fails the Job and the others are stopped (SIGTERM by PID); a failed container's
last log lines are its termination message (``FallbackToLogsOnError``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class FakePod:
    name: str
    index: int
    process: subprocess.Popen
    log: Path
    stopped: bool = False


@dataclass
class FakeJob:
    manifest: dict[str, Any]
    pods: list[FakePod] = field(default_factory=list)
    failed: bool = False

    def condition(self) -> str | None:
        codes = [pod.process.poll() for pod in self.pods]
        if self.failed or any(code not in (None, 0) for code in codes):
            self.failed = True
            return "Failed"
        if codes and all(code == 0 for code in codes):
            return "Complete"
        return None


class FakeKubernetes:
    """Start with ``with FakeKubernetes(workdir, cwd) as cluster:``; ``cluster.host`` is the
    API URL, ``cluster.jobs_created`` counts created Jobs."""

    def __init__(self, workdir: Path, cwd: Path) -> None:
        self.workdir, self.cwd = workdir, cwd
        self.jobs: dict[str, FakeJob] = {}
        self.services: set[str] = set()
        self.jobs_created = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeKubernetes:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for job in list(self.jobs.values()):
            self.stop(job, signal.SIGKILL)
        self.server.shutdown()
        self.server.server_close()

    def api_client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration(host=self.host)
        return client.ApiClient(configuration)

    # -- the "kubelet" ----------------------------------------------------------------------
    def start(self, manifest: dict[str, Any]) -> FakeJob:
        name = manifest["metadata"]["name"]
        manifest["metadata"]["uid"] = str(uuid.uuid4())
        job = FakeJob(manifest)
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PET_") and k != "MTB_KUBERNETES_LAUNCH"}
        env.update({item["name"]: item["value"] for item in container.get("env", [])})
        with socket.socket() as sock:  # cluster DNS, here: the endpoint on loopback
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env["PET_RDZV_ENDPOINT"] = re.sub(r"^[^:]+:\d+$", f"127.0.0.1:{port}",
                                          env["PET_RDZV_ENDPOINT"])
        command = [sys.executable if part == "python" else part
                   for part in container["command"]]
        for index in range(manifest["spec"]["completions"]):
            log = self.workdir / f"{name}-{index}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    command, cwd=self.cwd, env={**env, "JOB_COMPLETION_INDEX": str(index)},
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            job.pods.append(FakePod(f"{name}-{index}-x{index}", index, process, log))
        threading.Thread(target=self._enforce_backoff_limit, args=(job,), daemon=True).start()
        return job

    def _enforce_backoff_limit(self, job: FakeJob) -> None:
        while job.condition() is None:
            time.sleep(0.2)
        if job.condition() == "Failed":
            self.stop(job, signal.SIGTERM)

    def stop(self, job: FakeJob, sig: int) -> None:
        for pod in job.pods:
            if pod.process.poll() is None:
                pod.stopped = True
                pod.process.send_signal(sig)
        for pod in job.pods:
            try:
                pod.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pod.process.kill()
                pod.process.wait()

    # -- API objects ----------------------------------------------------------------------
    def job_json(self, job: FakeJob) -> dict[str, Any]:
        state = job.condition()
        conditions = [{"type": state, "status": "True", "reason": "BackoffLimitExceeded"
                       if state == "Failed" else "Completed", "message": ""}] if state else []
        active = sum(pod.process.poll() is None for pod in job.pods)
        return {**job.manifest, "status": {"conditions": conditions, "active": active}}

    def pod_json(self, job: FakeJob, pod: FakePod) -> dict[str, Any]:
        code = pod.process.poll()
        state: dict[str, Any]
        if code is None:
            phase, state = "Running", {"running": {}}
        else:
            exit_code = code if code >= 0 else 128 - code  # a signal, as the kubelet reports it
            message = ""
            if exit_code:
                message = pod.log.read_bytes()[-2048:].decode("utf-8", "replace")
            phase = "Succeeded" if code == 0 else "Failed"
            state = {"terminated": {"exitCode": exit_code, "message": message,
                                    "reason": "Completed" if code == 0 else "Error"}}
        name = job.manifest["metadata"]["name"]
        return {
            "metadata": {"name": pod.name, "namespace": job.manifest["metadata"]["namespace"],
                         "labels": {"job-name": name},
                         "annotations": {"batch.kubernetes.io/job-completion-index":
                                         str(pod.index)}},
            "status": {"phase": phase, "containerStatuses": [{
                "name": "train", "image": "fake", "imageID": "", "ready": code is None,
                "restartCount": 0, "state": state}]},
        }


def _handler(cluster: FakeKubernetes) -> type[BaseHTTPRequestHandler]:
    jobs = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?$")
    services = re.compile(r"^/api/v1/namespaces/([^/]+)/services(?:/([^/]+))?$")
    pods = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
    logs = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one response per connection: a log stream just ends

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _missing(self, what: str) -> None:
            self._send(404, {"kind": "Status", "status": "Failure", "reason": "NotFound",
                             "message": f"{what} not found", "code": 404})

        def _body(self) -> dict[str, Any]:
            return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))

        def do_POST(self) -> None:
            path = urlparse(self.path).path
            if jobs.match(path):
                body = self._body()
                with cluster.lock:
                    if body["metadata"]["name"] in cluster.jobs:
                        return self._send(409, {"kind": "Status", "code": 409,
                                                "reason": "AlreadyExists"})
                    job = cluster.start(body)
                    cluster.jobs[body["metadata"]["name"]] = job
                    cluster.jobs_created += 1
                return self._send(201, cluster.job_json(job))
            if services.match(path):
                body = self._body()
                if body["metadata"]["name"] in cluster.services:
                    return self._send(409, {"kind": "Status", "code": 409})
                cluster.services.add(body["metadata"]["name"])
                return self._send(201, body)
            return self._missing(path)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if (match := jobs.match(url.path)) and match.group(2):
                job = cluster.jobs.get(match.group(2))
                return self._send(200, cluster.job_json(job)) if job else self._missing("job")
            if pods.match(url.path):
                selector = query.get("labelSelector", [""])[0]
                name = selector.removeprefix("job-name=")
                job = cluster.jobs.get(name)
                items = [cluster.pod_json(job, pod) for pod in job.pods] if job else []
                return self._send(200, {"kind": "PodList", "items": items})
            if match := logs.match(url.path):
                found = [(job, pod) for job in cluster.jobs.values() for pod in job.pods
                         if pod.name == match.group(2)]
                if not found:
                    return self._missing("pod")
                follow = query.get("follow", ["false"])[0].lower() == "true"  # "True" here
                return self._stream(found[0][1], follow)
            return self._missing(url.path)

        def _stream(self, pod: FakePod, follow: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            with pod.log.open("rb") as source:
                while True:
                    chunk = source.read(65536)
                    if chunk:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    elif not follow or pod.process.poll() is not None:
                        self.wfile.write(source.read())
                        return
                    else:
                        time.sleep(0.1)

        def do_DELETE(self) -> None:
            path = urlparse(self.path).path
            if (match := jobs.match(path)) and match.group(2):
                job = cluster.jobs.pop(match.group(2), None)
                if job is None:
                    return self._missing("job")
                cluster.stop(job, signal.SIGTERM)
                return self._send(200, {"kind": "Status", "status": "Success"})
            if (match := services.match(path)) and match.group(2):
                if match.group(2) not in cluster.services:
                    return self._missing("service")
                cluster.services.discard(match.group(2))
                return self._send(200, {"kind": "Status", "status": "Success"})
            return self._missing(path)

    return Handler
