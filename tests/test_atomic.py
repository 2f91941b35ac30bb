import json

import numpy as np

from multitask_bert.atomic import write_json_atomic, write_text_atomic


def test_write_text_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    write_text_atomic(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_write_json_atomic_keeps_key_order_and_writes_numpy_scalars_as_floats(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"b": np.float32(0.5), "a": {"n": 1}})
    text = path.read_text()
    assert json.loads(text) == {"b": 0.5, "a": {"n": 1}}
    assert text.index('"b"') < text.index('"a"')  # not sorted
    assert text == json.dumps({"b": 0.5, "a": {"n": 1}}, indent=2)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
