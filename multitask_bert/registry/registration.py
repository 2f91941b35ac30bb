"""Registering a logged model as a new version: tags, the promotion decision, aliases."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from multitask_bert.registry.aliases import CHALLENGER, CHAMPION, DEFAULT_MODEL_NAME
from multitask_bert.registry.lookup import champion_model_version
from multitask_bert.registry.promotion import (
    DEFAULT_MAX_HEAD_REGRESSION,
    PromotionDecision,
    Rescored,
    decide_promotion,
)
from multitask_bert.registry.store import mlflow_store, registry_client
from multitask_bert.registry.version_tags import FINGERPRINT_TAG_PREFIX, HEAD_SCORE_TAG_PREFIX
from multitask_bert.tracking import redact_uri
from multitask_bert.tracking.mlflow_logger import _hide_credentials

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger("multitask_bert.registry")  # one name for the package's messages

CHALLENGER_ONLY = "not promoted: registered as challenger only (a sweep trial; the sweep applies "\
                  "the champion rule to its best trial)"


@dataclass
class RegistrationResult:
    """What :func:`register` did."""

    model_name: str
    version: str
    """The new version."""
    aliases: list[str]
    """Aliases the new version holds now (``challenger``, maybe ``champion``)."""
    promoted: bool
    """Whether ``champion`` moved to the new version."""
    reason: str
    """One sentence: why it was or was not promoted."""
    champion_version: str | None
    """The champion after registration."""
    champion_score: float | None
    """The score of the previous champion the new version was compared with (rescored on
    the new data when the data changed); None when there was none to compare."""
    score: float
    """The new version's score."""
    score_metric: str = ""
    model_uri: str = field(default="")
    """``models:/<name>/<version>`` of the new version."""
    regressed_heads: dict[str, dict[str, float]] = field(default_factory=dict)
    """Heads that fell more than the margin below the champion (why it was not promoted)."""
    head_scores: dict[str, float] = field(default_factory=dict)
    """The new version's major validation metric of every head."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (NaN scores become None)."""
        data = asdict(self)
        for key in ("champion_score", "score"):
            if isinstance(data[key], float) and not math.isfinite(data[key]):
                data[key] = None
        return data


@_hide_credentials
def register(
    model_uri: str,
    *,
    tracking_uri: str,
    model_name: str = DEFAULT_MODEL_NAME,
    score: float,
    score_metric: str,
    data_fingerprints: Mapping[str, str],
    config_hash: str,
    git_commit: str | None,
    extra_tags: Mapping[str, str] | None = None,
    rescore_champion: Callable[[str], Rescored] | None = None,
    higher_is_better: bool = True,
    await_registration_for: int = 300,
    head_scores: Mapping[str, float] | None = None,
    lower_is_better_heads: tuple[str, ...] = (),
    max_head_regression: float = DEFAULT_MAX_HEAD_REGRESSION,
    description: str | None = None,
    promote: bool = True,
) -> RegistrationResult:
    """Registers a logged model as a new version, sets ``challenger``, maybe ``champion``.

    Promotion (:func:`~multitask_bert.registry.promotion.decide_promotion`): ``champion``
    moves to the new version when there is no champion, or when the new score is at least
    the champion's on the same validation data and (given ``head_scores``) no head's major
    metric is more than ``max_head_regression`` below the champion's. The per-head scores go
    into ``head_score.<task>/<head>`` tags; a refusal into ``not_promoted_reason`` and
    ``regressed_heads``. When the champion's ``data_fingerprint.*``
    tags (and score metric) equal the new ones, the stored scores are compared; otherwise
    ``rescore_champion(models:/<name>/<champion version>)`` gives the champion's score on
    the new data. Without it, the scores are not comparable and the new version is promoted
    (the reason says so).

    Order, so that a failure leaves the registry consistent: the version and its tags are
    written first, the aliases last. If anything fails after the version exists (e.g.
    ``rescore_champion`` raises), the version stays, tagged ``promoted=false``, and no alias
    moves.

    Args:
        model_uri: what :func:`~multitask_bert.registry.packaging.log_model` returned (or
            any URI MLflow can register).
        tracking_uri: the MLflow store, also used as the model registry.
        model_name: the registered model (created if absent).
        score: the new version's major validation score.
        score_metric: the score's name (``mean`` or ``task/head/metric``).
        data_fingerprints: per task, the fingerprint of the validation data behind ``score``.
        config_hash: hash of the experiment config (to skip retraining identical runs).
        git_commit: the code's commit, if known.
        extra_tags: more version tags.
        rescore_champion: scores a model URI on the new validation data; called while
            MLflow points at ``tracking_uri``, so ``mlflow.pyfunc.load_model(uri,
            dst_path=...)`` works inside it.
        higher_is_better: False for losses and errors.
        await_registration_for: seconds to wait for the version to be READY.
        head_scores: ``{"task/head": major validation metric}`` of the new version.
        lower_is_better_heads: heads of ``head_scores`` whose major metric is an error.
        max_head_regression: how far a head may fall below the champion's (0.01: a point).
        description: the version's description (tasks, heads, labels, scores).
        promote: False registers a challenger only (a sweep's trial): ``champion`` does not
            move, whatever the score; :func:`~multitask_bert.registry.challenger.promote_version`
            applies the rule later.

    Raises:
        ValueError: for a score that is not a finite number.
    """
    score = float(score)
    if not math.isfinite(score):
        raise ValueError(f"register: score must be a finite number, got {score!r}")
    fingerprints = {str(task): str(value) for task, value in data_fingerprints.items()}
    with mlflow_store(tracking_uri):
        client = registry_client(tracking_uri)
        _ensure_registered_model(client, model_name)
        champion = champion_model_version(client, model_name)

        # 1. The version and its description tags.
        tags = {
            "score": repr(score),
            "score_metric": score_metric,
            "config_hash": config_hash,
            **{FINGERPRINT_TAG_PREFIX + task: value for task, value in fingerprints.items()},
            **{HEAD_SCORE_TAG_PREFIX + head: repr(float(value))
               for head, value in (head_scores or {}).items()},
            **({"max_head_regression": repr(float(max_head_regression))} if head_scores else {}),
            **({"git_commit": git_commit} if git_commit else {}),
            **{str(key): str(value) for key, value in (extra_tags or {}).items()},
        }
        version = client.create_model_version(
            model_name,
            source=model_uri,
            run_id=_source_run_id(client, model_uri),
            tags=tags,
            description=description,
            await_creation_for=await_registration_for,
            model_id=_model_id(model_uri),
        )
        number = str(version.version)
        try:
            _check_ready(version, model_name)
            # 2. The decision (may run the champion on the new data).
            decision = decide_promotion(
                model_name, score, score_metric, fingerprints, champion,
                rescore_champion, higher_is_better, head_scores=head_scores,
                max_head_regression=max_head_regression,
                lower_is_better_heads=lower_is_better_heads,
            ) if promote else PromotionDecision(False, CHALLENGER_ONLY, None)
            promoted = "true" if decision.promote else "false"
            client.set_model_version_tag(model_name, number, "promoted", promoted)
            if not decision.promote:
                client.set_model_version_tag(model_name, number, "not_promoted_reason",
                                             decision.reason[:4000])
                if decision.regressed_heads:
                    client.set_model_version_tag(
                        model_name, number, "regressed_heads",
                        "; ".join(f"{head} {r['delta']:+.4f} ({r['score']:.4f} vs champion "
                                  f"{r['champion']:.4f})"
                                  for head, r in decision.regressed_heads.items())[:4000])
            # 3. The aliases, last.
            client.set_registered_model_alias(model_name, CHALLENGER, number)
            if decision.promote:
                client.set_registered_model_alias(model_name, CHAMPION, number)
        except Exception as error:
            with contextlib.suppress(Exception):  # best effort: the first error matters more
                client.set_model_version_tag(model_name, number, "promoted", "false")
                client.set_model_version_tag(
                    model_name, number, "not_promoted_reason",
                    redact_uri(f"registration failed: {type(error).__name__}: {error}")[:4000],
                )
            raise
        aliases = sorted(client.get_model_version(model_name, number).aliases)

    result = RegistrationResult(
        model_name=model_name,
        version=number,
        aliases=aliases,
        promoted=decision.promote,
        reason=decision.reason,
        champion_version=number if decision.promote else (str(champion.version) if champion
                                                          else None),
        champion_score=decision.champion_score,
        score=score,
        score_metric=score_metric,
        model_uri=f"models:/{model_name}/{number}",
        regressed_heads=decision.regressed_heads,
        head_scores={str(k): float(v) for k, v in (head_scores or {}).items()},
    )
    logger.info("registered %s v%s at %s: %s", model_name, number, redact_uri(tracking_uri),
                result.reason)
    return result


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _model_id(model_uri: str) -> str | None:
    """The logged-model id of a ``models:/<model_id>`` URI (MLflow 3), else None."""
    rest = model_uri.removeprefix("models:/")
    if rest != model_uri and "/" not in rest and "@" not in rest and rest.startswith("m-"):
        return rest
    return None


def _source_run_id(client: MlflowClient, model_uri: str) -> str | None:
    if model_uri.startswith("runs:/"):
        return model_uri[len("runs:/"):].split("/", 1)[0]
    if (model_id := _model_id(model_uri)) is not None:
        return client.get_logged_model(model_id).source_run_id
    return None


def _check_ready(version: Any, model_name: str) -> None:
    status = str(getattr(version, "status", "READY"))
    if status != "READY":
        raise RuntimeError(f"model version {model_name} v{version.version} is {status}, not "
                           f"READY: {getattr(version, 'status_message', '')}")
