"""``multitask-bert train | evaluate | predict | score | export | register | baselines``: the
library without Prefect."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import BinaryIO

from multitask_bert.errors import EXIT_OUT_OF_MEMORY, EXIT_USER_ERROR, MultitaskBertError

log = logging.getLogger("multitask_bert")


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in str(exc)


def _record_for_torchrun(exc: BaseException, exit_code: int) -> None:
    """Under ``torchrun``: record the error and the exit code in this rank's error file
    (``TORCHELASTIC_ERROR_FILE``); the launcher reads every rank's, since this rank's output
    may be filtered out of the console."""
    import os

    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    from multitask_bert.training.torchrun import error_record

    with open(path, "w") as out:
        json.dump(error_record(exc, exit_code, os.environ.get("RANK", "?")), out)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return args.func(args)
    except MultitaskBertError as exc:  # a user mistake: the message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        _record_for_torchrun(exc, EXIT_USER_ERROR)
        return EXIT_USER_ERROR
    except Exception as exc:
        if _is_out_of_memory(exc):
            print(f"error: out of memory: {exc}", file=sys.stderr)
            _record_for_torchrun(exc, EXIT_OUT_OF_MEMORY)
            return EXIT_OUT_OF_MEMORY
        _record_for_torchrun(exc, 1)
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multitask-bert",
        description="Fine-tune one shared BERT encoder on several NLP tasks at once.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="tokenise, train, evaluate; writes metrics.json and best/")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="experiment YAML")
    source.add_argument("--run-dir", help="a run folder whose resolved config.yaml to train "
                        "(what the pipeline's supervised child runs)")
    train.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config key, e.g. training.epochs=1")
    train.set_defaults(func=_train)

    launch = sub.add_parser(
        "launch", help="train like the pipeline's train step: a supervised child, under "
        "torchrun when training.nproc_per_node or PET_NNODES ask for more than one process; "
        "exit 2: bad input, 3: out of memory, 1: crashed (run it again to resume)")
    source = launch.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="experiment YAML (resolved and written into its run "
                        "folder first)")
    source.add_argument("--run-dir", help="a run folder with a resolved config.yaml")
    launch.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key (with --config)")
    launch.set_defaults(func=_launch)

    manifest = sub.add_parser(
        "kubernetes-manifest", help="print the headless Service and indexed Job that train a "
        "run folder on several Kubernetes nodes (what the train step submits with "
        "MTB_KUBERNETES_LAUNCH; for kubectl apply)")
    manifest.add_argument("--launch", required=True, help="launch settings YAML, e.g. "
                          "deployments/kubernetes/launch-2x8.yaml")
    manifest.add_argument("--run-dir", required=True, help="the run folder, as the pods see it")
    manifest.add_argument("--tracking-uri", help="MLflow store for the pods (no credentials: "
                          "give those through env_from_secrets)")
    manifest.set_defaults(func=_kubernetes_manifest)

    evaluate = sub.add_parser("evaluate", help="per-head metrics of a saved model")
    evaluate.add_argument("--model", required=True, help="model folder, e.g. runs/NAME/best")
    evaluate.add_argument("--config", required=True, help="experiment YAML naming the tasks")
    evaluate.add_argument("--set", dest="overrides", action="append", default=[],
                          metavar="KEY=VALUE")
    evaluate.add_argument("--split", default="validation", choices=["validation", "test"])
    evaluate.add_argument("--output", help="also write the metrics JSON here")
    evaluate.set_defaults(func=_evaluate)

    predict = sub.add_parser("predict", help="every head of a task, for text or JSONL rows")
    predict.add_argument("--model", required=True, help="model folder, e.g. runs/NAME/best")
    predict.add_argument("--task", required=True, help="task name")
    predict.add_argument("--text", action="append", default=[],
                         help="input text (repeatable); token tasks split it on whitespace")
    predict.add_argument("--text-b", help="second text of a pair task (with one --text)")
    predict.add_argument("--input", help="JSONL file of rows ({'text': ...}, {'tokens': [...]}, "
                         "{'text_a': ..., 'text_b': ...}); '-' reads stdin")
    predict.add_argument("--output", help="JSONL output file (default: stdout)")
    predict.add_argument("--on-error", choices=["fail", "row"], default="fail",
                         help="a malformed row: fail (exit 2, naming it) or an 'error' field "
                         "in its output line")
    predict.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                         help="onnx: the model's ONNX graph (exported on first use)")
    predict.set_defaults(func=_predict)
    register = sub.add_parser(
        "register", help="register a finished run's best/ model in the MLflow registry")
    register.add_argument("--run-dir", required=True, help="run folder with metrics.json, best/")
    register.add_argument("--model-name", default="multitask-bert")
    register.add_argument("--tracking-uri", help="MLflow store (default: the run's, or "
                          "$MLFLOW_TRACKING_URI)")
    register.set_defaults(func=_register)

    score = sub.add_parser(
        "score", help="batch scoring: every row of JSONL/CSV/Parquet files into Parquet, "
        "rejected rows with their reason into a JSONL file")
    score.add_argument("--model", default="models:/multitask-bert@champion",
                       help="model URI or model folder (default: %(default)s)")
    score.add_argument("--input", dest="inputs", action="append", required=True,
                       metavar="FILE", help="JSONL, CSV or Parquet file (repeatable)")
    score.add_argument("--output", required=True, help="Parquet file to write")
    score.add_argument("--rejects", help="rejected rows (JSONL; default <output>.rejects.jsonl)")
    score.add_argument("--task", help="the task of rows without a 'task' field (a file of "
                       "one task's data)")
    score.add_argument("--runtime", choices=["torch", "onnx"], default="torch")
    score.add_argument("--batch-size", type=int, default=32)
    score.add_argument("--chunk-rows", type=int, default=2048,
                       help="rows read, scored and written at a time")
    score.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI)")
    score.set_defaults(func=_score)

    export = sub.add_parser("export", help="one ONNX graph for every head, with the label "
                            "maps and the tokenizer")
    export.add_argument("--model", required=True, help="model folder or model URI "
                        "(models:/multitask-bert@champion)")
    export.add_argument("--format", choices=["onnx"], default="onnx")
    export.add_argument("--output", help="folder to write (default: the model folder; "
                        "required for a model URI)")
    export.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI)")
    export.set_defaults(func=_export)

    baselines = sub.add_parser(
        "baselines", help="train one single-task model per task and compare every head with "
        "the multi-task model")
    baselines.add_argument("--config", required=True, help="experiment YAML")
    baselines.add_argument("--set", dest="overrides", action="append", default=[],
                           metavar="KEY=VALUE", help="override a config key")
    baselines.add_argument("--run-dir", help="a finished multi-task run folder (its "
                           "metrics.json is reused); default: train the multi-task model too")
    baselines.set_defaults(func=_baselines)
    return parser


def _baselines(args: argparse.Namespace) -> int:
    from multitask_bert import pipeline
    from multitask_bert.errors import ConfigError
    from multitask_bert.single_task import add_single_task_baselines

    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"output_dir={Path(args.run_dir).resolve()}")
    config = pipeline.resolve(args.config, overrides)
    if args.run_dir:
        metrics_file = config.run_dir / "metrics.json"
        if not metrics_file.is_file():
            raise ConfigError(f"{args.run_dir}: no metrics.json; pass the folder of a finished "
                              "multi-task run, or leave out --run-dir to train one")
        multi = json.loads(metrics_file.read_text())
        known = set(multi.get("best", {}))
        if not known & {t.name for t in config.tasks}:
            raise ConfigError(f"{args.run_dir}: the run has tasks {sorted(known)}, none of the "
                              f"config's {[t.name for t in config.tasks]}")
        report = add_single_task_baselines(config, multi["best"], run_id=multi.get("run_id"))
    else:
        pipeline.start(config)
        _, report = pipeline.run_with_baselines(config)
    print(report["markdown"])
    print(f"metrics: {config.run_dir / 'metrics.json'} (key 'baselines')")
    return 0


def _score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from multitask_bert import pipeline

    bar = tqdm(unit="row", desc="score", dynamic_ncols=True, disable=None)

    def progress(done: int, total: int | None, seconds: float) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        summary = pipeline.score(args.model, args.inputs, args.output, rejects=args.rejects,
                                 task=args.task, runtime=args.runtime, batch_size=args.batch_size,
                                 chunk_rows=args.chunk_rows, tracking_uri=args.tracking_uri,
                                 on_progress=progress)
    finally:
        bar.close()
    print(f"scored {summary['scored']} of {summary['rows']} rows in {summary['seconds']:.1f} s "
          f"({summary['rows_per_s']:.0f} rows/s) with {summary['model_uri']} -> "
          f"{summary['output']}")
    if summary["rejected"]:
        print(f"rejected {summary['rejected']} rows (reasons in {summary['rejects']})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from multitask_bert import pipeline
    from multitask_bert.errors import ConfigError

    if ":/" in args.model and not args.output:
        raise ConfigError("--output is needed to export a model URI (a folder to write)")
    path = pipeline.export_onnx(args.model, args.output, tracking_uri=args.tracking_uri)
    print(f"wrote {path} (+ multitask_config.json with the label maps, tokenizer files)")
    return 0


def _register(args: argparse.Namespace) -> int:
    from multitask_bert.pipeline import register_run

    result = register_run(args.run_dir, model_name=args.model_name,
                          tracking_uri=args.tracking_uri)
    print(f"{result['model_name']} version {result['version']} "
          f"(aliases: {', '.join(result['aliases'])}): {result['reason']}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from multitask_bert import pipeline
    from multitask_bert.errors import ConfigError
    from multitask_bert.evaluation.report import format_metrics_table
    from multitask_bert.training import distributed
    from multitask_bert.training.run_lock import run_folder_lock

    if args.run_dir and args.overrides:
        raise ConfigError("--run-dir trains the run folder's config.yaml as it is; change it "
                          "with --config <yaml> --set ..., which writes a new one")
    info = distributed.init_distributed()  # under torchrun: join the process group
    try:
        if args.run_dir:
            config = pipeline.run_config(args.run_dir)
        else:
            config = pipeline.resolve(args.config, args.overrides)
        # one training per run folder (rank 0 holds the lock for every rank; a second run of
        # the same experiment stops here, naming the holder)
        with run_folder_lock(config.run_dir) if info.is_main else contextlib.nullcontext():
            if info.is_main and not args.run_dir:  # the config.yaml later steps read
                pipeline.start(config)
            result = pipeline.train_experiment(config)
    finally:
        distributed.destroy()
    if not info.is_main:
        return 0
    print(format_metrics_table(result.best, title=f"best (step {result.best_step})"))
    print(f"model: {Path(result.output_dir) / 'best'}")
    print(f"metrics: {Path(result.output_dir) / 'metrics.json'}")
    return 0


def _launch(args: argparse.Namespace) -> int:
    from multitask_bert import pipeline
    from multitask_bert.errors import ConfigError

    if args.run_dir and args.overrides:
        raise ConfigError("--run-dir trains the run folder's config.yaml as it is; change it "
                          "with --config <yaml> --set ..., which writes a new one")
    run = args.run_dir or pipeline.start(pipeline.resolve(args.config, args.overrides))
    try:
        trained = pipeline.train(run, on_line=print, on_start=lambda command: print(
            "launching: " + " ".join(command), flush=True))
    except pipeline.TrainingOutOfMemory as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    except pipeline.TrainingCrashed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(trained, indent=2))
    return 0


def _kubernetes_manifest(args: argparse.Namespace) -> int:
    import yaml

    from multitask_bert.training.kubernetes import KubernetesLaunch, render

    objects = render(Path(args.run_dir), KubernetesLaunch.load(args.launch),
                     tracking_uri=args.tracking_uri)
    print(yaml.safe_dump_all(objects, sort_keys=False), end="")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from multitask_bert import pipeline
    from multitask_bert.evaluation.report import format_metrics_table

    config = pipeline.resolve(args.config, args.overrides)
    metrics = pipeline.evaluate_saved_model(args.model, config, split=args.split)
    print(format_metrics_table(metrics, title=f"{args.split}: {args.model}"))
    if args.output:
        from multitask_bert.atomic import write_json_atomic

        write_json_atomic(args.output, metrics)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from multitask_bert.errors import DataError
    from multitask_bert.inference import Predictor

    rows = _read_rows(args)
    if not rows:
        raise DataError("nothing to predict: give --text, or --input with JSONL rows")
    rows = [{"task": args.task, **row} if isinstance(row, dict) else row for row in rows]
    outputs = Predictor(args.model, runtime=args.runtime).output_rows(rows, args.on_error)
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        for row, output in zip(rows, outputs, strict=True):
            out.write(json.dumps({**row, **output}) + "\n")
    finally:
        if args.output:
            out.close()
    return 0


def _read_rows(args: argparse.Namespace) -> list[dict]:
    from multitask_bert.errors import DataError

    if args.text_b is not None:
        if len(args.text) != 1:
            raise DataError("--text-b needs exactly one --text")
        return [{"text_a": args.text[0], "text_b": args.text_b}]
    rows = [{"text": text} for text in args.text]
    if args.input:
        stream = sys.stdin.buffer if args.input == "-" else _open_input(args.input)
        with stream:
            for number, raw in enumerate(stream, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{args.input}:{number}: not valid UTF-8 ({exc.reason} at "
                                    f"byte {exc.start}). Re-save the file as UTF-8") from None
                if line.strip():
                    rows.append(_parse_row(args.input, number, line))
    return rows


def _open_input(name: str) -> BinaryIO:
    """``--input`` opened for reading; a missing or unreadable file is a user error."""
    from multitask_bert.errors import DataError

    path = Path(name)
    fix = "Give the path of a JSONL file (one JSON object a line), or '-' to read stdin"
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"--input {name}: file not found (resolved: {path.resolve()}). "
                        f"{fix}") from None
    except IsADirectoryError:
        raise DataError(f"--input {name}: is a folder, not a file. {fix}") from None
    except OSError as exc:
        raise DataError(f"--input {name}: cannot read it ({exc.strerror}). {fix}") from None


def _parse_row(name: str, number: int, line: str) -> dict:
    from multitask_bert.errors import DataError

    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{name}:{number}: invalid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise DataError(f"{name}:{number}: each line must be a JSON object")
    return row


if __name__ == "__main__":
    raise SystemExit(main())
