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


def test_is_disk_full_knows_the_errno_and_the_wrapped_forms_and_nothing_else():
    import errno

    from multitask_bert.atomic import is_disk_full

    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    # safetensors' wording (it raises SafetensorError, not OSError)
    assert is_disk_full(RuntimeError("Error while serializing: I/O error: No space left on "
                                     "device (os error 28)"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("[enforce fail at inline_container.cc:672]") from exc
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.EIO, "Input/output error"))
    assert not is_disk_full(RuntimeError("unexpected pos 704 vs 598"))


def test_disk_full_error_names_path_need_free_space_mount_and_setting():
    from multitask_bert.errors import DiskFullError, MultitaskBertError

    error = DiskFullError("/data/cache/ner/abc", 12_300_001, 5_999_999, "/data", "cache_dir")
    assert isinstance(error, MultitaskBertError)  # exit code 2, not retried
    assert str(error) == ("disk full writing /data/cache/ner/abc: needs about 13 MB, 5 MB free "
                          "on /data; free space or set cache_dir elsewhere")
