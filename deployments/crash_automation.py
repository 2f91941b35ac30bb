"""Prefect automations that rerun a crashed ``train-multitask`` run, at most N times.

A flow run is ``Crashed`` when its process dies (the worker's machine rebooted, the pod was
evicted, the process was killed). Flow retries do not apply to crashed runs, so without this
nobody starts the run again until the next schedule. One automation per deployment of
``train-multitask`` (``rerun-crashed-train-multitask/<deployment>``):

* trigger: the event ``prefect.flow-run.Crashed`` of a flow run of that deployment;
* action: run that deployment (``run-deployment``, source ``selected``: Prefect refuses an
  inferred deployment on flow-run state triggers, an infinite-loop guard) with the crashed
  run's parameters, plus ``crash_reruns_left``: N for the first rerun, one less for each
  rerun of a rerun. Rendered by the server from the crashed run (a Jinja template).

The new run finds the experiment's run folder (``runs/<experiment>/<fingerprint>``) and
resumes from its newest checkpoint. The count travels with the runs: the run started with
``crash_reruns_left = -1`` (a rerun's rerun after N of them crashed) fails at once, before
any work, with a message naming the limit, so the chain ends there with a ``Failed`` run that
says why (not ``Crashed``: nothing triggers again). A run started by hand or by the schedule
carries no count and gets N reruns of its own.

Run ``python deployments/crash_automation.py [--max-reruns N]`` against a server where the
deployments exist (``scripts/services.sh`` does after ``prefect deploy --all``); it creates
or updates the automations, so running it again changes nothing but N.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

FLOW_NAME = "train-multitask"
AUTOMATION_PREFIX = "rerun-crashed-train-multitask/"
DEFAULT_MAX_RERUNS = int(os.environ.get("MTB_MAX_CRASH_RERUNS", "2"))

# The crashed run's `params` with `crash_reruns_left` counted down (N when it had none).
# `flow_run` is the crashed run (the server loads it for the template); `dict(p, k=v)` makes a
# new mapping (the template sandbox forbids changing the run's own).
_RERUN_PARAMS = (
    "{{% set p = flow_run.parameters.get('params') or {{}} %}}"
    "{{% set left = p.get('crash_reruns_left') %}}"
    "{{{{ dict(p, crash_reruns_left=({n} if left is none else left) - 1) | tojson }}}}"
)


def rerun_parameters(max_reruns: int) -> dict[str, Any]:
    """The ``run-deployment`` action's parameters: the crashed run's, counted down."""
    return {"params": {"__prefect_kind": "json", "value": {
        "__prefect_kind": "jinja", "template": _RERUN_PARAMS.format(n=max_reruns)}}}


def crash_automation(deployment_id: Any, deployment_name: str, max_reruns: int):
    """The automation that reruns crashed runs of one deployment (not yet created)."""
    from prefect.automations import AutomationCore, EventTrigger, Posture, RunDeployment

    return AutomationCore(
        name=f"{AUTOMATION_PREFIX}{deployment_name}",
        description=(f"Reruns a Crashed run of {FLOW_NAME}/{deployment_name} with the same "
                     f"parameters, at most {max_reruns} times in a row; the rerun resumes "
                     "from the experiment's checkpoint (deployments/crash_automation.py)."),
        trigger=EventTrigger(
            expect={"prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=[
                {"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAME},
                {"prefect.resource.role": "deployment",
                 "prefect.resource.id": f"prefect.deployment.{deployment_id}"},
            ],
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[RunDeployment(source="selected", deployment_id=deployment_id,
                               parameters=rerun_parameters(max_reruns))],
    )


def ensure_crash_automations(max_reruns: int = DEFAULT_MAX_RERUNS,
                             deployments: list[str] | None = None) -> dict[str, str]:
    """Create (or update in place) one automation per deployment of ``train-multitask``
    on the current Prefect API; ``deployments`` limits them to those names. Returns
    ``{automation name: id}``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    if max_reruns < 0:
        raise ValueError(f"max_reruns must be >= 0, got {max_reruns}")
    made: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        found = client.read_deployments(flow_filter=FlowFilter(
            name=FlowFilterName(any_=[FLOW_NAME])))
        for deployment in found:
            if deployments is not None and deployment.name not in deployments:
                continue
            automation = crash_automation(deployment.id, deployment.name, max_reruns)
            existing = client.read_automations_by_name(automation.name)
            if existing:
                client.update_automation(existing[0].id, automation)
                for duplicate in existing[1:]:
                    client.delete_automation(duplicate.id)
                made[automation.name] = str(existing[0].id)
            else:
                made[automation.name] = str(client.create_automation(automation))
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-reruns", type=int, default=DEFAULT_MAX_RERUNS,
                        help="reruns of one crashed run, in a row (default: "
                             "$MTB_MAX_CRASH_RERUNS or 2)")
    parser.add_argument("--deployment", action="append", dest="deployments",
                        help="only this deployment of train-multitask (repeatable)")
    args = parser.parse_args(argv)
    made = ensure_crash_automations(args.max_reruns, args.deployments)
    if not made:
        print(f"no deployment of {FLOW_NAME} on this server: run `prefect deploy --all` first",
              file=sys.stderr)
        return 1
    for name in sorted(made):
        print(f"automation {name} (at most {args.max_reruns} reruns of a crashed run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
