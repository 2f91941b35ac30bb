"""A hyper-parameter sweep: an Optuna study whose trials are training runs started elsewhere.

The library half of the ``sweep-multitask`` flow (which starts each trial as a run of the
``train-multitask`` deployment and waits for it). No Prefect here::

    sweep = Sweep.open("configs/quickstart.yaml", "configs/sweep.yaml", n_trials=12)
    for ticket in sweep.unfinished():    # trials an interrupted sweep left running
        ...follow ticket.flow_run_id (or start it: ticket.overrides)...
    while (ticket := sweep.ask()) is not None:
        sweep.bind(ticket, flow_run_id)  # which training run is this trial
        outcome = ...wait for that run...
        sweep.tell(ticket, TrialOutcome(...))
    rows, best = sweep.table(), sweep.best()

* **The study** is stored in SQLite beside the MLflow store (``optuna.db`` next to
  ``mlflow.db``; for a tracking server, ``optuna.db`` in the experiment folder's parent), so
  running the same sweep again continues it: finished trials stay, trials still running are
  followed again (their training run ids are trial attributes), none is drawn twice.
* **The sampler** is TPE (seeded; ``constant_liar`` so that parallel trials spread out) or
  random.
* **The objective** is ``score`` (the run's major validation score, ``training.early_stopping
  .metric``), a head (``task/head``: its major metric) or ``task/head/metric``; maximised
  unless it is a loss or an error (``mse``, ``mae``), or ``direction`` says otherwise.
* **MLflow** gets one parent run per study and one child run per trial (its parameters,
  objective, per-head validation metrics, registered version and training run).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from multitask_bert.config import ExperimentConfig
from multitask_bert.errors import ConfigError
from multitask_bert.evaluation.evaluator import flatten_metrics, major_score
from multitask_bert.heads import HEAD_TYPES
from multitask_bert.sweep.space import SearchSpace
from multitask_bert.tracking import default_artifact_location, mlflow_key, redact_uri
from multitask_bert.tracking.mlflow_logger import sqlite_path

log = logging.getLogger("multitask_bert.sweep")

STUDY_FILE = "optuna.db"
"""The Optuna study database, beside the MLflow store."""

Direction = Literal["auto", "maximize", "minimize"]


@dataclass
class TrialTicket:
    """One trial to run: what the training run needs, and which one it is once started."""

    number: int
    params: dict[str, Any]
    overrides: list[str]
    """Every override of the trial's run: the sweep's, then its values."""
    flow_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrialOutcome:
    """How a trial's training run ended."""

    state: str
    """``COMPLETED``, ``FAILED``, ``CRASHED``, ``CANCELLED``, ..."""
    result: dict[str, Any] | None = None
    """The ``train-multitask`` flow's return value (``score``, ``metrics``,
    ``registration``, ``run_dir``) when it completed."""
    message: str = ""


@dataclass
class TrialRecord:
    """A finished trial as the sweep recorded it (a row of the table)."""

    number: int
    state: str
    objective: float | None
    params: dict[str, Any]
    version: str | None = None
    flow_run_id: str | None = None
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


def study_storage(config: ExperimentConfig) -> Path:
    """Where the study lives: beside a SQLite MLflow store, else in ``runs/``."""
    database = sqlite_path(config.logging.tracking_uri or "")
    folder = database.parent if database is not None else config.run_dir.parent
    return folder / STUDY_FILE


class Sweep:
    """An opened study (see the module docstring); build it with :meth:`open`."""

    def __init__(self, study: Any, space: SearchSpace, config: ExperimentConfig,
                 objective: str, n_trials: int, parent_run_id: str | None) -> None:
        self.study, self.space, self.config = study, space, config
        self.objective, self.n_trials = objective, n_trials
        self.parent_run_id = parent_run_id

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def uid(self) -> str:
        """Unique to this study (a study deleted and made again under its name gets
        another): part of each trial run's idempotency key."""
        return self.study.user_attrs["uid"]

    @property
    def storage_path(self) -> Path:
        return study_storage(self.config)

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        config_path: str | Path,
        search_space: str | Path,
        *,
        overrides: list[str] | tuple[str, ...] = (),
        n_trials: int = 8,
        objective: str = "score",
        direction: Direction = "auto",
        sampler: Literal["tpe", "random"] = "tpe",
        seed: int = 0,
        study_name: str | None = None,
        root: str | Path | None = None,
        track: bool = True,
    ) -> Sweep:
        """Validate the base config, the search space and the objective, then create the
        study or load it (same name: the same sweep, continued).

        Raises:
            ConfigError: naming the file, the parameter or the objective, and the fix.
        """
        import optuna

        root = Path(root) if root is not None else Path.cwd()
        config_file = Path(config_path) if Path(config_path).is_absolute() else root / config_path
        space_file = (Path(search_space) if Path(search_space).is_absolute()
                      else root / search_space)
        config = ExperimentConfig.load(config_file, list(overrides)).resolve(root=root)
        space = SearchSpace.load(space_file)

        def validate(extra: list[str]) -> ExperimentConfig:
            return ExperimentConfig.load(config_file, [*overrides, *extra])

        space.check_against(validate)
        _check_objective(objective, validate)
        resolved = _direction(config, objective, direction)
        if n_trials < 1:
            raise ConfigError(f"n_trials must be at least 1, got {n_trials}")
        name = study_name or _default_name(config, space, overrides, objective)
        storage_path = study_storage(config)
        storage_path.parent.mkdir(parents=True, exist_ok=True)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{storage_path}", engine_kwargs={"connect_args": {"timeout": 60}})
        chosen = (optuna.samplers.TPESampler(seed=seed, constant_liar=True)
                  if sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed))
        study = optuna.create_study(study_name=name, storage=storage, sampler=chosen,
                                    direction=resolved, load_if_exists=True)
        if study.direction.name.lower() != resolved:
            raise ConfigError(f"study {name!r} in {storage_path} was created to "
                              f"{study.direction.name.lower()} its objective, not to {resolved}; "
                              "give another study_name")
        attrs = study.user_attrs
        for key, value in (("objective", objective), ("search_space", space.fingerprint())):
            if attrs.get(key, value) != value:
                raise ConfigError(f"study {name!r} in {storage_path} has {key} "
                                  f"{attrs[key]!r}, not {value!r}; give another study_name")
            study.set_user_attr(key, value)
        if "uid" not in attrs:  # this study, not an earlier one of the same name (deleted)
            study.set_user_attr("uid", uuid.uuid4().hex)
        study.set_user_attr("config_path", str(config_path))
        study.set_user_attr("root", str(root))
        study.set_user_attr("overrides", list(overrides))
        sweep = cls(study, space, config, objective, n_trials, attrs.get("mlflow_parent_run_id"))
        if track and config.logging.backend in ("mlflow", "both"):
            sweep._open_parent_run(sampler, seed)
        done = len(sweep.study.trials)
        log.info("sweep %s: %d of %d trials drawn, study %s, objective %s (%s)", name, done,
                 n_trials, storage_path, objective, resolved)
        return sweep

    # -- trials -----------------------------------------------------------------------------
    def unfinished(self) -> list[TrialTicket]:
        """Trials drawn but not told (an interrupted sweep's): follow them again."""
        import optuna

        return [self._ticket(t) for t in self.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]

    def ask(self) -> TrialTicket | None:
        """The next trial's values, or None once ``n_trials`` were drawn."""
        if len(self.study.trials) >= self.n_trials:
            return None
        trial = self.study.ask(self.space.distributions())
        return self._ticket(self.study.trials[trial.number])

    def bind(self, ticket: TrialTicket, flow_run_id: str) -> None:
        """Record which training run computes the trial (a continued sweep follows it)."""
        ticket.flow_run_id = str(flow_run_id)
        trial_id = self.study.trials[ticket.number]._trial_id
        self.study._storage.set_trial_user_attr(trial_id, "flow_run_id", ticket.flow_run_id)

    def tell(self, ticket: TrialTicket, outcome: TrialOutcome) -> TrialRecord:
        """Record a trial's outcome in the study and in MLflow (a child run)."""
        import optuna

        record = self._record(ticket, outcome)
        trial_id = self.study.trials[ticket.number]._trial_id
        storage = self.study._storage
        for key, value in (("state", record.state), ("version", record.version),
                           ("message", record.message[:2000]), ("metrics", record.metrics)):
            storage.set_trial_user_attr(trial_id, key, value)
        if record.objective is not None:
            self.study.tell(ticket.number, record.objective)
        else:
            self.study.tell(ticket.number, state=optuna.trial.TrialState.FAIL)
        self._log_child_run(record)
        objective = "failed" if record.objective is None else f"{record.objective:.4f}"
        log.info("sweep %s: trial %d %s (%s = %s)", self.name, ticket.number, record.state,
                 self.objective, objective)
        return record

    def records(self) -> list[TrialRecord]:
        """Every finished trial, best objective first (failed trials last)."""
        import optuna

        finished = [t for t in self.study.trials if t.state in (
            optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)]
        records = [TrialRecord(
            number=t.number, state=t.user_attrs.get("state", t.state.name),
            objective=t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
            params=dict(t.params), version=t.user_attrs.get("version"),
            flow_run_id=t.user_attrs.get("flow_run_id"), message=t.user_attrs.get("message", ""),
            metrics=t.user_attrs.get("metrics", {})) for t in finished]
        sign = 1 if self.study.direction.name == "MINIMIZE" else -1
        return sorted(records, key=lambda r: (r.objective is None,
                                              sign * (r.objective or 0.0), r.number))

    def table(self) -> list[dict[str, Any]]:
        """The records as table rows (a Prefect table artifact): rank, trial, objective,
        state, version, then one column per parameter."""
        rows = []
        for rank, record in enumerate(self.records(), 1):
            row = {"rank": rank, "trial": record.number, self.objective: (
                round(record.objective, 4) if record.objective is not None else None),
                "state": record.state, "version": record.version}
            row.update({key: _short(value) for key, value in record.params.items()})
            rows.append(row)
        return rows

    def best(self) -> TrialRecord | None:
        """The best completed trial, or None."""
        records = [r for r in self.records() if r.objective is not None]
        return records[0] if records else None

    def trial_config(self, record: TrialRecord) -> ExperimentConfig:
        """The resolved config a trial trained (base config, sweep overrides, its values)."""
        overrides = self.trial_overrides(record.number, record.params)
        return ExperimentConfig.load(self._config_file(), overrides).resolve(root=self._root())

    def finish(self, best: TrialRecord | None, registration: dict[str, Any] | None) -> None:
        """Summarise the sweep on its MLflow parent run."""
        if self.parent_run_id is None:
            return
        client = self._client()
        done = self.records()
        metrics = {"trials_finished": float(len(done)),
                   "trials_failed": float(sum(r.objective is None for r in done))}
        tags = {"sweep_trials": str(len(done))}
        if best is not None:
            metrics["best_objective"] = float(best.objective)
            tags.update({"best_trial": str(best.number), "best_version": str(best.version)})
        if registration:
            tags["best_version_aliases"] = ",".join(registration.get("aliases", []))
        _log(client, self.parent_run_id, metrics=metrics, tags=tags)
        if len(done) >= self.n_trials:
            client.set_terminated(self.parent_run_id, "FINISHED")

    # -- helpers ----------------------------------------------------------------------------
    def _ticket(self, trial: Any) -> TrialTicket:
        params = dict(trial.params)
        return TrialTicket(trial.number, params, self.trial_overrides(trial.number, params),
                           trial.user_attrs.get("flow_run_id"))

    def trial_overrides(self, number: int, params: dict[str, Any]) -> list[str]:
        """Every override of one trial: the sweep's, then the trial's values. An
        ``output_dir`` among the sweep's becomes ``<output_dir>/<study>/trial-<n>`` (without
        one, each train-multitask run has its own folder already): trials never share a run
        folder, whose checkpoints would belong to another experiment."""
        base = []
        for item in self.study.user_attrs.get("overrides", []):
            key, _, value = item.partition("=")
            if key.strip() == "output_dir":
                item = f"output_dir={value.strip()}/{self.name}/trial-{number}"
            base.append(item)
        return [*base, *self.space.overrides(params)]

    def _record(self, ticket: TrialTicket, outcome: TrialOutcome) -> TrialRecord:
        result = outcome.result or {}
        validation = (result.get("metrics") or {}).get("validation") or {}
        objective, message = None, outcome.message
        if outcome.state == "COMPLETED" and result.get("skipped"):
            message = result.get("reason", "training skipped")
        elif outcome.state == "COMPLETED":
            try:
                objective = self._objective(result, validation)
            except (KeyError, StopIteration, TypeError, ValueError) as exc:
                message = f"no objective {self.objective!r} in the run's metrics ({exc!r})"
        registration = result.get("registration") or {}
        version = registration.get("version")
        return TrialRecord(ticket.number, outcome.state, objective, ticket.params,
                           str(version) if version is not None else None, ticket.flow_run_id,
                           message, flatten_metrics(validation, prefix="validation"))

    def _objective(self, result: dict[str, Any], validation: dict[str, Any]) -> float:
        if self.objective == "score":
            value = float(result["score"])
        else:
            heads = {t.name: list(t.heads) for t in self.config.tasks}
            value = major_score(validation, self.objective, heads)
        if not math.isfinite(value):
            raise ValueError(f"objective is {value}")
        return value

    def _client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.config.logging.tracking_uri)

    def _open_parent_run(self, sampler: str, seed: int) -> None:
        from multitask_bert.tracking.mlflow_logger import MLflowLogger

        uri = self.config.logging.tracking_uri or ""
        tags = {"sweep_study": self.name, "sweep_storage": str(self.storage_path),
                "sweep_objective": self.objective, "sweep_n_trials": str(self.n_trials),
                "sweep_direction": self.study.direction.name.lower()}
        try:
            parent = MLflowLogger(
                tracking_uri=uri, run_name=f"sweep {self.name}",
                experiment_name=self.config.logging.experiment_name or self.config.name,
                artifact_location=default_artifact_location(uri, self.config.run_dir),
                tags=tags, resume_run_id=self.parent_run_id)
        except Exception as exc:  # a sweep goes on without tracking, loudly
            log.warning("sweep %s: no MLflow parent run at %s (%s)", self.name,
                        redact_uri(uri), exc)
            return
        if self.parent_run_id is None:
            self.parent_run_id = parent.run_id
            self.study.set_user_attr("mlflow_parent_run_id", parent.run_id)
            parent.log_params({"sampler": sampler, "seed": seed, **{
                f"space/{p.key}": p.describe() for p in self.space.parameters}})

    def _log_child_run(self, record: TrialRecord) -> None:
        if self.parent_run_id is None:
            return
        client = self._client()
        experiment_id = client.get_run(self.parent_run_id).info.experiment_id
        existing = client.search_runs(
            [experiment_id], filter_string=f"tags.sweep_study = '{self.name}' and "
            f"tags.sweep_trial = '{record.number}'")
        if existing:  # told before an interruption: recorded already
            return
        run = client.create_run(experiment_id, run_name=f"trial {record.number}", tags={
            "mlflow.parentRunId": self.parent_run_id, "sweep_study": self.name,
            "sweep_trial": str(record.number), "sweep_state": record.state,
            "prefect_flow_run_id": record.flow_run_id or "",
            "registered_version": record.version or "",
            **({"sweep_message": record.message[:4000]} if record.message else {})})
        metrics = dict(record.metrics)
        if record.objective is not None:
            metrics["objective"] = record.objective
        _log(client, run.info.run_id, params={mlflow_key(k): _short(v)
                                              for k, v in record.params.items()},
             metrics=metrics)
        client.set_terminated(run.info.run_id,
                              "FINISHED" if record.objective is not None else "FAILED")

    def _config_file(self) -> Path:
        path = Path(self.study.user_attrs["config_path"])
        return path if path.is_absolute() else self._root() / path

    def _root(self) -> Path:
        return Path(self.study.user_attrs.get("root") or Path.cwd())


def _log(client: Any, run_id: str, *, params: dict[str, Any] | None = None,
         metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None) -> None:
    import time

    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(mlflow_key(k), float(v), now, 0) for k, v in (metrics or {}).items()
                 if isinstance(v, (int, float)) and math.isfinite(float(v))],
        params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])


def _short(value: Any) -> Any:
    return float(f"{value:.4g}") if isinstance(value, float) else value


def _check_objective(objective: str, validate: Any) -> None:
    """``score``, or what ``training.early_stopping.metric`` accepts (``task/head[/metric]``;
    ``validate(overrides)`` loads the base config with them)."""
    if objective == "score":
        return
    if objective == "mean":
        raise ConfigError("objective 'mean': use 'score' (with training.early_stopping."
                          "metric: mean it is the mean of the tasks' major scores)")
    try:
        validate([f"training.early_stopping.metric={objective}"])
    except ConfigError as exc:
        raise ConfigError(f"objective {objective!r}: use 'score' (the run's major validation "
                          f"score), 'task/head' or 'task/head/metric': {exc}") from None


def _direction(config: ExperimentConfig, objective: str, direction: Direction) -> str:
    if direction != "auto":
        return direction
    metric = config.training.early_stopping.metric if objective == "score" else objective
    if objective == "score" and config.training.early_stopping.mode:
        return "minimize" if config.training.early_stopping.mode == "min" else "maximize"
    lower = {"loss"}.union(*(kind.lower_is_better for kind in HEAD_TYPES.values()))
    return "minimize" if metric.rsplit("/", 1)[-1] in lower else "maximize"


def _default_name(config: ExperimentConfig, space: SearchSpace, overrides: Any,
                  objective: str) -> str:
    key = json.dumps([config.name, space.fingerprint(), list(overrides), objective])
    return f"{config.name}-sweep-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
