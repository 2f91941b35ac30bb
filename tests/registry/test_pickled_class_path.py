"""Logged models unpickle ``MultitaskPyfunc`` by module path: old and new paths both load."""

from __future__ import annotations

import pickle

import cloudpickle
import mlflow.pyfunc

from multitask_bert.config import EncoderConfig
from multitask_bert.models.multitask import build_model, load_tokenizer
from multitask_bert.registry import MultitaskPyfunc
from multitask_bert.tasks import TaskSpec
from tests.conftest import TINY_ENCODER

#: `python_model.pkl` of a model that `log_model` logged before `multitask_bert/registry.py`
#: became a package (commit f7c8262, MLflow 3.17.2): it names
#: `multitask_bert.registry.MultitaskPyfunc`.
PRE_SPLIT_PICKLE = (
    b"\x80\x05\x95;\x01\x00\x00\x00\x00\x00\x00\x8c\x17multitask_bert.registry\x94\x8c\x0f"
    b"MultitaskPyfunc\x94\x93\x94)\x81\x94}\x94(\x8c\n_predictor\x94N\x8c\x13_predict_type"
    b"_hints\x94\x8c\x17mlflow.models.signature\x94\x8c\n_TypeHints\x94\x93\x94)\x81\x94}"
    b"\x94(\x8c\x05input\x94\x8c\x06pandas\x94\x8c\tDataFrame\x94\x93\x94\x8c\x06output"
    b"\x94\x8c\x17cloudpickle.cloudpickle\x94\x8c\r_builtin_type\x94\x93\x94\x8c\x0cGeneri"
    b"cAlias\x94\x85\x94R\x94\x8c\x08builtins\x94\x8c\x04list\x94\x93\x94h\x16h\x17\x8c"
    b"\x04dict\x94\x93\x94h\x17\x8c\x03str\x94\x93\x94\x8c\x06typing\x94\x8c\x03Any\x94"
    b"\x93\x94\x86\x94\x86\x94R\x94\x85\x94\x86\x94R\x94ubub."
)


def test_the_pre_split_path_still_names_the_class():
    assert b"multitask_bert.registry\x94\x8c\x0fMultitaskPyfunc" in PRE_SPLIT_PICKLE
    assert pickle.loads(b"cmultitask_bert.registry\nMultitaskPyfunc\n.") is MultitaskPyfunc
    loaded = cloudpickle.loads(PRE_SPLIT_PICKLE)
    assert type(loaded) is MultitaskPyfunc and loaded._predictor is None


def test_new_pickles_name_the_pyfunc_module():
    data = cloudpickle.dumps(MultitaskPyfunc())
    assert b"multitask_bert.registry.pyfunc" in data
    assert type(cloudpickle.loads(data)) is MultitaskPyfunc


def test_a_model_pickled_before_the_split_loads_and_predicts(tmp_path):
    task = TaskSpec(name="review", type="sequence", train="unused.jsonl",
                    heads=[{"name": "label", "type": "classification"}])
    model = build_model(EncoderConfig(**TINY_ENCODER), [task], {"review": {"label": ["a", "b"]}},
                        seed=3)
    model.save(tmp_path / "best", load_tokenizer(EncoderConfig().resolve_path()))
    mlflow.pyfunc.save_model(tmp_path / "pyfunc", python_model=MultitaskPyfunc(),
                             artifacts={"model": str(tmp_path / "best")},
                             pip_requirements=[])  # no requirement inference (slow)
    rows = [{"task": "review", "text": "a lovely film"}]
    expected = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc")).predict(rows)

    (tmp_path / "pyfunc" / "python_model.pkl").write_bytes(PRE_SPLIT_PICKLE)
    old = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    assert type(old.unwrap_python_model()) is MultitaskPyfunc
    assert old.predict(rows) == expected
