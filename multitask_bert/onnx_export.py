"""One ONNX graph for every head: the encoder once, then every head of every task.

``export_onnx(model_dir)`` writes ``model.onnx`` (inputs ``input_ids``, ``attention_mask``,
``token_type_ids``, and ``word_shapes`` for a model with word-shape tasks; dynamic batch and
length; one output ``<task>/<head>`` of logits per head) beside the model's
``multitask_config.json`` (tasks, label maps) and tokenizer files, which an export to
another folder copies too; the label maps are also in the graph's
metadata (``multitask_config``), with the sha256 of the weights it was exported from
(``weights_sha256``: a graph older than the weights beside it is exported again).
:class:`OnnxModel` runs it with ONNX Runtime for :class:`~multitask_bert.inference.Predictor`
(``runtime="onnx"``), asking the graph only for the outputs of the task at hand (ONNX
Runtime then skips the other heads).

The export goes through ``torch.export`` (``torch.onnx.export(..., dynamo=True)``): the
TorchScript tracer bakes the traced batch's shape into the attention mask of Hugging Face
encoders, and such a graph gives wrong logits for other lengths (measured: 0.5 off).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multitask_bert.errors import ConfigError

log = logging.getLogger("multitask_bert")

ONNX_FILE = "model.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 18


class AllHeads(nn.Module):
    """The encoder once, then every head of every task: the graph ONNX gets."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.names = [f"{task}/{head}" for task in model.task_names
                      for head in model.heads[task]]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor, word_shapes: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, ...]:
        model = self.model
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if model._takes_token_types:
            kwargs["token_type_ids"] = token_type_ids
        else:  # keep the input in the graph (one signature for every encoder)
            kwargs["input_ids"] = input_ids + 0 * token_type_ids
        hidden = model.encoder(**kwargs).last_hidden_state
        pooled = model._pool(hidden, attention_mask)
        tokens = {task: model._shaped(task, hidden, word_shapes) for task in model.task_names}
        return tuple(head(tokens[task] if head.reads == "tokens" else pooled)
                     for task in model.task_names for head in model.heads[task].values())


def input_names(model: Any) -> tuple[str, ...]:
    """The graph's inputs: ``word_shapes`` too when a task of the model uses word shapes."""
    return (*INPUT_NAMES, "word_shapes") if model.shape_tasks else INPUT_NAMES


def export_onnx(model_dir: str | Path, output_dir: str | Path | None = None) -> Path:
    """Exports a saved model folder to ``<output_dir>/model.onnx`` (default: the model
    folder itself), written atomically; returns the file.

    Raises:
        ConfigError: when ``model_dir`` is not a saved model folder.
    """
    from multitask_bert.models.multitask import CONFIG_FILE, MultiTaskModel, load_tokenizer

    model_dir = Path(model_dir)
    if not (model_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{model_dir}: not a multitask-bert model folder (no {CONFIG_FILE}); "
                          "pass the folder written by training, e.g. runs/<name>/best")
    output_dir = Path(output_dir) if output_dir is not None else model_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    model = MultiTaskModel.load(model_dir)
    wrapper = AllHeads(model).eval()
    tokenizer = load_tokenizer(model_dir)
    sample = tokenizer(["an example sentence for the export", "two"], padding=True,
                       return_tensors="pt")
    inputs: tuple[torch.Tensor, ...] = (
        sample["input_ids"], sample["attention_mask"],
        sample.get("token_type_ids", torch.zeros_like(sample["input_ids"])))
    names = input_names(model)
    if len(names) > len(inputs):  # word shapes: any ids, 0 on the padding
        inputs = (*inputs, sample["attention_mask"].clone())
    batch, length = torch.export.Dim("batch", min=1), torch.export.Dim("length", min=2)
    dynamic = {name: {0: batch, 1: length} for name in names}
    fd, tmp_name = tempfile.mkstemp(prefix=".model.onnx.", dir=output_dir)
    os.close(fd)
    try:
        logging.getLogger("onnx_ir").setLevel(logging.WARNING)  # a line per folded constant
        with warnings.catch_warnings():  # the three inputs share their two axes: not news
            warnings.filterwarnings("ignore", message=".*shares the same shape constraints")
            program = torch.onnx.export(
                wrapper, inputs, None, input_names=list(names),
                output_names=wrapper.names, dynamic_shapes=dynamic, opset_version=OPSET,
                dynamo=True, verbose=False)
        program.save(tmp_name, external_data=False)
        _add_metadata(tmp_name, {"multitask_config": (model_dir / CONFIG_FILE).read_text(),
                                 "weights_sha256": weights_digest(model_dir)})
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp made it 0600
        os.replace(tmp_name, output_dir / ONNX_FILE)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    if output_dir.resolve() != model_dir.resolve():  # label maps and tokenizer beside it
        shutil.copy2(model_dir / CONFIG_FILE, output_dir / CONFIG_FILE)
        tokenizer.save_pretrained(str(output_dir))
    log.info("exported %s (%d heads) to %s", model_dir, len(wrapper.names),
             output_dir / ONNX_FILE)
    return output_dir / ONNX_FILE


def _add_metadata(path: str, values: dict[str, str]) -> None:
    import onnx

    graph = onnx.load(path)
    for key, value in values.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, path)


def weights_digest(model_dir: Path) -> str:
    """sha256 of the model's weights file: which weights a graph was exported from."""
    from multitask_bert.models.multitask import WEIGHTS_FILE

    digest = hashlib.sha256()
    path = model_dir / WEIGHTS_FILE
    if not path.is_file():
        return ""
    with path.open("rb") as stream:
        while block := stream.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _matches_weights(path: Path, model_dir: Path) -> bool:
    """Whether the graph was exported from the weights in ``model_dir`` (True for a folder
    without weights: an export folder, whose graph is all there is)."""
    import onnx

    current = weights_digest(model_dir)
    if not current:
        return True
    graph = onnx.load(str(path), load_external_data=False)
    exported = {p.key: p.value for p in graph.metadata_props}.get("weights_sha256")
    return exported == current


class OnnxModel:
    """``model.onnx`` of a model folder in an ONNX Runtime session (exported first when
    the folder has none). ``tasks`` and ``label_vocab`` come from the folder's config."""

    def __init__(self, model_dir: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        from multitask_bert.models.multitask import CONFIG_FILE
        from multitask_bert.tasks import TaskSpec

        model_dir = Path(model_dir)
        path = model_dir / ONNX_FILE
        if not path.is_file():
            log.info("%s has no %s: exporting it now (once)", model_dir, ONNX_FILE)
            export_onnx(model_dir)
        elif not _matches_weights(path, model_dir):
            log.info("%s was exported from other weights than %s holds now: exporting it "
                     "again", path, model_dir)
            export_onnx(model_dir)
        config = json.loads((model_dir / CONFIG_FILE).read_text())
        self.tasks = [TaskSpec.model_validate(t) for t in config["tasks"]]
        self.label_vocab: dict[str, dict[str, list[str]]] = config["label_vocab"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.inputs = [i.name for i in self.session.get_inputs()]

    def logits(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor, word_shapes: torch.Tensor | None = None
               ) -> dict[str, torch.Tensor]:
        """Every head's logits of ``task`` for one batch (float CPU tensors)."""
        names = [name for name in self.outputs if name.split("/", 1)[0] == task]
        feed = {"input_ids": input_ids, "attention_mask": attention_mask,
                "token_type_ids": token_type_ids}
        if "word_shapes" in self.inputs:  # tasks without shapes: no shape anywhere (0)
            feed["word_shapes"] = (word_shapes if word_shapes is not None
                                   else torch.zeros_like(input_ids))
        values = self.session.run(names, {k: v.cpu().numpy().astype("int64")
                                          for k, v in feed.items()})
        return {name.split("/", 1)[1]: torch.from_numpy(value).float()
                for name, value in zip(names, values, strict=True)}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
