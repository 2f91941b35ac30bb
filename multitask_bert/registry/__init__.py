"""MLflow model packaging, registration, aliases, loading back.

    uri = log_model(run_dir / "best", tracking_uri=uri, experiment_name="glue")
    result = register(uri, tracking_uri=uri, score=0.84, score_metric="mean",
                      data_fingerprints={"conll": "ab12..."}, config_hash="9f3c...",
                      git_commit="e1d2...")
    model = load_champion(uri, "multitask-bert", dst_path=work_dir / "champion")
    model.predict(pd.DataFrame([{"task": "conll", "tokens": ["Alice", "left"]}]))

A saved model folder goes in as a pyfunc ``PythonModel`` (:class:`MultitaskPyfunc`) with the
folder as its artifact and this package as its code, so the model loads where
``multitask-bert`` is not installed. Every new version gets the alias ``challenger``;
``champion`` moves to it only when it scores at least as well as the champion on the same
validation data (see :func:`register`).

One concept per module:

- ``pyfunc``: :class:`MultitaskPyfunc`, the model MLflow serves, and its row handling.
- ``packaging``: :func:`log_model` and the pinned requirements it logs.
- ``aliases``: the default model name and the ``champion``/``challenger`` aliases.
- ``version_tags``: the tags a version carries (score, data fingerprints, config hash).
- ``promotion``: the promotion rule, pure (no MLflow).
- ``registration``: :func:`register`, which writes a version, its tags and aliases.
- ``challenger``: :func:`promote_version`, the champion rule applied to a version registered
  earlier as a challenger only (a sweep's best trial).
- ``lookup``: :func:`find_champion`, :func:`load_champion`.
- ``store``: :func:`mlflow_store`, MLflow's process-wide URIs pointed at one store.

MLflow's ``log_model`` and ``load_model`` read the process-wide tracking URI; the functions
here set it for the length of the call and restore it after (not thread-safe against other
threads using MLflow's fluent API at the same time).

Every name below stays importable from ``multitask_bert.registry``, as it was when this
package was one module. ``multitask_bert.registry.MultitaskPyfunc`` in particular must stay:
models logged before the split unpickle the class by that path (see ``pyfunc``).
"""

from multitask_bert.registry.aliases import CHALLENGER, CHAMPION, DEFAULT_MODEL_NAME
from multitask_bert.registry.challenger import promote_version
from multitask_bert.registry.lookup import find_champion, load_champion
from multitask_bert.registry.packaging import RUNTIME_DISTRIBUTIONS, log_model, pinned_requirements
from multitask_bert.registry.promotion import PromotionDecision, decide_promotion
from multitask_bert.registry.pyfunc import MultitaskPyfunc, input_rows, predict_rows
from multitask_bert.registry.registration import RegistrationResult, register
from multitask_bert.registry.store import mlflow_store
from multitask_bert.registry.version_tags import FINGERPRINT_TAG_PREFIX, champion_info

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_MODEL_NAME",
    "FINGERPRINT_TAG_PREFIX",
    "RUNTIME_DISTRIBUTIONS",
    "MultitaskPyfunc",
    "PromotionDecision",
    "RegistrationResult",
    "champion_info",
    "decide_promotion",
    "find_champion",
    "input_rows",
    "load_champion",
    "log_model",
    "mlflow_store",
    "pinned_requirements",
    "predict_rows",
    "promote_version",
    "register",
]
