"""Write a Triton model repository for COREBA from an exported ONNX file (and, when given, a TensorRT plan).

Usage::

    python serving/build_repository.py --onnx artifacts/coreba.onnx --output artifacts/model_repository \\
        [--engine python|onnx|trt] [--plan artifacts/coreba.plan] [--max-batch-size 8] ...

Models written (``<output>/<model>/config.pbtxt`` + ``<output>/<model>/1/...``):

* ``coreba_python``      Python backend running ONNX Runtime (CPU, or CUDA with ``--python-gpu``): what CI serves.
* ``coreba_onnx``        Triton's ONNX Runtime backend (NGC images), GPU instances unless ``--onnx-cpu``,
                         TensorRT acceleration of ONNX Runtime with ``--onnx-tensorrt``.
* ``coreba_trt``         Triton's TensorRT backend, only when ``--plan`` is given.
* ``coreba_postprocess`` Python backend: :func:`coreba.postprocess.postprocess` -> moments and saliency.
* ``coreba``             the ensemble a client calls: ``--engine`` -> post-processing.

Nothing is written before everything is checked, and nothing is overwritten that this builder did not
write. The models are built in a staging folder beside ``output``; every ``config.pbtxt`` is built as
Triton's ModelConfig message, re-read and checked (:mod:`serving.config_check`) together with any other
model already in ``output`` (a foreign model that Triton would reject is reported before anything is
written); coreba's folders in ``output`` are replaced only if they hold exactly what an earlier build
recorded in its marker (:mod:`serving.repository_marker`), unless ``force``; then each folder is swapped
in with a rename. Model dims come from the ``config`` metadata the exporter stores in the ONNX file, so the
repository always matches the model it serves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from coreba.atomic import check_output_path, replace_directory, staging_directory
from coreba.onnx_io import read_model_config
from coreba.postprocess import DEFAULT_TOP_K
from serving import model_configs as configs
from serving.config_check import check_models, model_dirs
from serving.model_configs import Batching, TensorRTAcceleration
from serving.repository_marker import NotOursError, fingerprints, not_ours, read_marker, write_marker
from serving.spec import ALL_MODELS, ENGINE_MODELS, ENSEMBLE, ONNX_FILENAME, PLAN_FILENAME, POSTPROCESS

TEMPLATES = Path(__file__).resolve().parent / "templates"
VERSION = "1"
SHOWN = 3  # entries quoted in an error; the count says how many there are


def _write_model(output: Path, config, files: dict[str, Path]) -> Path:
    """``output/<name>/config.pbtxt`` and the version folder with ``files`` (name in folder -> source)."""
    model_dir = output / config.name
    (model_dir / VERSION).mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(configs.to_pbtxt(config))
    for name, source in files.items():
        shutil.copyfile(source, model_dir / VERSION / name)
    return model_dir


def _swap_in(stage: Path, output: Path, names: list[str], stale: list[str]) -> None:
    """Move each staged model folder into ``output`` (the old one goes into the staging folder, deleted with
    it), and move the ``stale`` coreba folders out of ``output`` the same way."""
    aside = stage / ".replaced"
    aside.mkdir()
    output.mkdir(exist_ok=True)
    for name in names:
        replace_directory(stage / name, output / name, aside=aside / name)
    for name in stale:
        os.replace(output / name, aside / name)


def build_repository(onnx_path: str | Path, output: str | Path, plan_path: str | Path | None = None,
                     engine: str = "python", batching: Batching | None = None, onnx_kind: str = "gpu",
                     python_kind: str = "cpu", tensorrt: TensorRTAcceleration | None = None,
                     top_k: int = DEFAULT_TOP_K, instances: int = 1, graph_optimization: str = "all",
                     intra_op_threads: int = 0, force: bool = False) -> dict[str, Path]:
    """Write the repository and return ``{model name: model folder}``. Raises, before writing anything:
    ``ValueError`` on bad options; :class:`coreba.onnx_io.OnnxFileError` for an ONNX file that is not a whole
    exported model; :class:`serving.config_check.ConfigCheckError` if a config (coreba's, or another model's
    in ``output``) would not load; :class:`serving.repository_marker.NotOursError` where coreba's folders in
    ``output`` hold anything this builder did not write (``force`` replaces them anyway);
    :class:`coreba.atomic.OutputPathError` for an unwritable path."""
    onnx_path, output = Path(onnx_path), Path(output)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"no ONNX file at {onnx_path}")
    check_output_path(output, kind="dir")
    if engine not in ENGINE_MODELS:
        raise ValueError(f"engine must be one of {tuple(ENGINE_MODELS)}, got {engine!r}")
    if engine == "trt" and plan_path is None:
        raise ValueError("--engine trt needs --plan (a TensorRT engine built from this ONNX file)")
    if plan_path is not None and not Path(plan_path).is_file():
        raise FileNotFoundError(f"no TensorRT plan at {plan_path}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    batching = batching or Batching()
    cfg = read_model_config(onnx_path)
    top_k = min(top_k, cfg.num_queries)  # post-processing keeps at most num_queries windows

    existing = output.is_dir()
    marker = read_marker(output) if existing and not force else {}
    foreign = [d for d in model_dirs(output) if d.name not in ALL_MODELS] if existing else []
    with staging_directory(output) as stage:
        written = {
            ENGINE_MODELS["python"]: _write_model(
                stage, configs.python_engine_config(cfg, batching, python_kind, instances, graph_optimization,
                                                    intra_op_threads),
                {"model.py": TEMPLATES / "coreba_python" / "model.py", ONNX_FILENAME: onnx_path}),
            ENGINE_MODELS["onnx"]: _write_model(
                stage, configs.onnx_config(cfg, batching, onnx_kind, instances, tensorrt), {ONNX_FILENAME: onnx_path}),
            POSTPROCESS: _write_model(stage, configs.postprocess_config(cfg, batching, top_k, instances),
                                      {"model.py": TEMPLATES / "coreba_postprocess" / "model.py"}),
            ENSEMBLE: _write_model(stage, configs.ensemble_config(cfg, batching, engine, top_k), {}),
        }
        if plan_path is not None:
            written[ENGINE_MODELS["trt"]] = _write_model(stage, configs.trt_config(cfg, batching, instances),
                                                         {PLAN_FILENAME: Path(plan_path)})
        check_models([*written.values(), *foreign])  # coreba's configs, and every other model served beside them
        if existing and not force:
            problems = not_ours(output, ALL_MODELS, marker)
            if problems:
                raise NotOursError(f"{output} holds {len(problems)} entr{'y' if len(problems) == 1 else 'ies'} "
                                   f"build_repository would replace but did not write: {', '.join(problems[:SHOWN])}"
                                   f"{', ...' if len(problems) > SHOWN else ''}; move them away or pass --force")
        names = list(written)
        stale = [n for n in ALL_MODELS if n not in written and (output / n).exists()]  # e.g. an old coreba_trt
        ours = fingerprints(stage, names)
        if existing:  # first record both versions: an interruption mid-swap leaves nothing unrecognised
            write_marker(output, {rel: [*marker.get(rel, []), *([ours[rel]] if rel in ours else [])]
                                  for rel in {*marker, *ours}})
        _swap_in(stage, output, names, stale)
        write_marker(output, {rel: [fp] for rel, fp in ours.items()})
    return {name: output / name for name in names}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    required = parser.add_argument_group("required")
    required.add_argument("--onnx", required=True, type=Path, help="ONNX file from export.onnx_export")
    required.add_argument("--output", required=True, type=Path, help="model repository folder to write")
    opt = parser.add_argument_group("engine")
    opt.add_argument("--force", action="store_true",
                     help="replace coreba's model folders in --output even where they hold files this builder did "
                          "not write (other models in --output are never touched)")
    opt.add_argument("--engine", choices=tuple(ENGINE_MODELS), default="python",
                     help="the engine the ensemble 'coreba' runs")
    opt.add_argument("--plan", type=Path, default=None, help="TensorRT plan: also write coreba_trt")
    opt.add_argument("--python-gpu", action="store_true",
                     help="coreba_python on GPU instances (ONNX Runtime CUDA provider) instead of CPU")
    opt.add_argument("--onnx-cpu", action="store_true", help="coreba_onnx on CPU instances instead of GPU")
    opt.add_argument("--onnx-tensorrt", action="store_true",
                     help="accelerate coreba_onnx with ONNX Runtime's TensorRT execution provider")
    opt.add_argument("--tensorrt-precision", choices=("FP16", "FP32"), default="FP16")
    opt.add_argument("--tensorrt-cache", default=None, help="server-side folder caching TensorRT engines")
    opt.add_argument("--instances", type=int, default=1, help="instances per engine/post-processing model")
    opt.add_argument("--graph-optimization", choices=("disabled", "basic", "extended", "all"), default="all",
                     help="ONNX Runtime graph optimization level of coreba_python")
    opt.add_argument("--intra-op-threads", type=int, default=0, help="ONNX Runtime threads (0 = its default)")
    batch = parser.add_argument_group("batching and answer")
    batch.add_argument("--max-batch-size", type=int, default=Batching.max_batch_size)
    batch.add_argument("--preferred-batch-sizes", type=int, nargs="*", default=list(Batching.preferred_batch_sizes))
    batch.add_argument("--max-queue-delay-us", type=int, default=Batching.max_queue_delay_us)
    batch.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="moments returned per query")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        batching = Batching(args.max_batch_size, tuple(args.preferred_batch_sizes), args.max_queue_delay_us)
        tensorrt = TensorRTAcceleration(args.tensorrt_precision, engine_cache_path=args.tensorrt_cache) \
            if args.onnx_tensorrt else None
        written = build_repository(args.onnx, args.output, args.plan, args.engine, batching,
                                   onnx_kind="cpu" if args.onnx_cpu else "gpu",
                                   python_kind="gpu" if args.python_gpu else "cpu", tensorrt=tensorrt,
                                   top_k=args.top_k, instances=args.instances,
                                   graph_optimization=args.graph_optimization,
                                   intra_op_threads=args.intra_op_threads, force=args.force)
    except (ValueError, OSError) as err:  # every error here is one line naming the file or the option
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, folder in written.items():
        print(f"{name:20s} {folder}")
    print(f"ensemble {ENSEMBLE!r} runs {ENGINE_MODELS[args.engine]!r}; repository checked against ModelConfig")
    return 0


if __name__ == "__main__":
    sys.exit(main())
