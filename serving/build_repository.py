"""Write a Triton model repository for COREBA from an exported ONNX file (and, when given, a TensorRT plan).

Usage::

    python serving/build_repository.py --onnx artifacts/coreba.onnx --output artifacts/model_repository \\
        [--engine python|onnx|trt] [--plan artifacts/coreba.plan] [--max-batch-size 8] ...
    # coreba_python on OpenVINO bf16, or on an int8 model from export/quantize.py:
    ... --python-engine openvino --precision bf16
    ... --python-engine openvino --precision int8 --python-model artifacts/coreba-int8-openvino.xml

Models written (``<output>/<model>/config.pbtxt`` + ``<output>/<model>/1/...``):

* ``coreba_python``      Python backend running ONNX Runtime (CPU, or CUDA with ``--python-gpu``): what CI serves;
                         or any engine/precision of ``coreba.engines`` (``--python-engine``, ``--precision``,
                         ``--python-model``), written into its config parameters.
* ``coreba_onnx``        Triton's ONNX Runtime backend (NGC images), GPU instances unless ``--onnx-cpu``,
                         TensorRT acceleration of ONNX Runtime with ``--onnx-tensorrt``.
* ``coreba_trt``         Triton's TensorRT backend, only when ``--plan`` is given.
* ``coreba_postprocess`` Python backend: :func:`coreba.postprocess.postprocess` -> moments and saliency.
* ``coreba``             the ensemble a client calls: ``--engine`` -> post-processing.

Every ``config.pbtxt`` is built as Triton's ModelConfig message and the written repository is re-read
and checked (:mod:`serving.config_check`) before this returns. Model dims come from the ``config``
metadata the exporter stores in the ONNX file, so the repository always matches the model it serves.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from coreba.config import CorebaConfig
from coreba.postprocess import DEFAULT_TOP_K
from serving import model_configs as configs
from serving.config_check import check_repository
from serving.model_configs import PYTHON_ENGINES, Batching, PythonEngine, TensorRTAcceleration
from serving.spec import ALL_MODELS, ENGINE_MODELS, ENSEMBLE, ONNX_FILENAME, PLAN_FILENAME, POSTPROCESS

TEMPLATES = Path(__file__).resolve().parent / "templates"
VERSION = "1"


def read_model_config(onnx_path: str | Path) -> CorebaConfig:
    """The :class:`CorebaConfig` the exporter stored in the ONNX file's metadata."""
    from export.onnx_export import read_metadata

    metadata = read_metadata(onnx_path)
    if "config" not in metadata:
        raise ValueError(f"{onnx_path} has no 'config' metadata: export it with export.onnx_export.export_onnx")
    return CorebaConfig.from_json(metadata["config"])


def _python_model_files(onnx_path: Path, engine: PythonEngine, python_model: Path | None) -> dict[str, Path]:
    """The files ``coreba_python`` loads: the export itself, or another model file (an int8 .onnx, an OpenVINO
    .xml with its .bin) after checking that it is the same model (same config)."""
    if python_model is None or python_model.resolve() == onnx_path.resolve():
        return {ONNX_FILENAME: onnx_path}
    if not python_model.is_file():
        raise FileNotFoundError(f"no model file at {python_model}")
    from coreba.predictor import config_for

    if config_for(python_model, engine.engine) != read_model_config(onnx_path):
        raise ValueError(f"{python_model} is not the model of {onnx_path} (their configs differ)")
    files = {engine.model_filename: python_model}
    if python_model.suffix == ".xml":
        files[Path(engine.model_filename).with_suffix(".bin").name] = python_model.with_suffix(".bin")
    return files


def _write_model(output: Path, config, files: dict[str, Path]) -> Path:
    """``output/<name>/config.pbtxt`` and the version folder with ``files`` (name in folder -> source)."""
    model_dir = output / config.name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    (model_dir / VERSION).mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(configs.to_pbtxt(config))
    for name, source in files.items():
        shutil.copyfile(source, model_dir / VERSION / name)
    return model_dir


def build_repository(onnx_path: str | Path, output: str | Path, plan_path: str | Path | None = None,
                     engine: str = "python", batching: Batching | None = None, onnx_kind: str = "gpu",
                     python_kind: str = "cpu", tensorrt: TensorRTAcceleration | None = None,
                     top_k: int = DEFAULT_TOP_K, instances: int = 1, graph_optimization: str = "all",
                     intra_op_threads: int = 0, python_engine: str = "onnxruntime", precision: str = "fp32",
                     python_model: str | Path | None = None) -> dict[str, Path]:
    """Write the repository and return ``{model name: model folder}``; raises ``ValueError`` on bad options
    and :class:`serving.config_check.ConfigCheckError` if a written config would not load."""
    onnx_path, output = Path(onnx_path), Path(output)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"no ONNX file at {onnx_path}")
    if engine not in ENGINE_MODELS:
        raise ValueError(f"engine must be one of {tuple(ENGINE_MODELS)}, got {engine!r}")
    if engine == "trt" and plan_path is None:
        raise ValueError("--engine trt needs --plan (a TensorRT engine built from this ONNX file)")
    if plan_path is not None and not Path(plan_path).is_file():
        raise FileNotFoundError(f"no TensorRT plan at {plan_path}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    batching = batching or Batching()
    python_model = Path(python_model) if python_model is not None else None
    if precision == "int8" and python_model is None:
        raise ValueError("--precision int8 serves a quantized model: give it with --python-model (write one with "
                         "export/quantize.py)")
    own_file = python_model is None or python_model.resolve() == onnx_path.resolve()
    engine_choice = PythonEngine(python_engine, precision,
                                 ONNX_FILENAME if own_file else f"model.{precision}{python_model.suffix}")
    python_files = _python_model_files(onnx_path, engine_choice, python_model)
    cfg = read_model_config(onnx_path)
    top_k = min(top_k, cfg.num_queries)  # post-processing keeps at most num_queries windows

    output.mkdir(parents=True, exist_ok=True)
    for stale in ALL_MODELS:  # a repository built earlier with a plan must not keep a stale coreba_trt
        if (output / stale).is_dir():
            shutil.rmtree(output / stale)
    written = {
        ENGINE_MODELS["python"]: _write_model(
            output, configs.python_engine_config(cfg, batching, python_kind, instances, graph_optimization,
                                                 intra_op_threads, engine_choice),
            {"model.py": TEMPLATES / "coreba_python" / "model.py", **python_files}),
        ENGINE_MODELS["onnx"]: _write_model(
            output, configs.onnx_config(cfg, batching, onnx_kind, instances, tensorrt), {ONNX_FILENAME: onnx_path}),
        POSTPROCESS: _write_model(output, configs.postprocess_config(cfg, batching, top_k, instances),
                                  {"model.py": TEMPLATES / "coreba_postprocess" / "model.py"}),
        ENSEMBLE: _write_model(output, configs.ensemble_config(cfg, batching, engine, top_k), {}),
    }
    if plan_path is not None:
        written[ENGINE_MODELS["trt"]] = _write_model(output, configs.trt_config(cfg, batching, instances),
                                                     {PLAN_FILENAME: Path(plan_path)})
    check_repository(output)
    return written


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    required = parser.add_argument_group("required")
    required.add_argument("--onnx", required=True, type=Path, help="ONNX file from export.onnx_export")
    required.add_argument("--output", required=True, type=Path, help="model repository folder to write")
    opt = parser.add_argument_group("engine")
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
    opt.add_argument("--intra-op-threads", type=int, default=0, help="engine threads of coreba_python (0 = default)")
    opt.add_argument("--python-engine", choices=PYTHON_ENGINES, default="onnxruntime",
                     help="the engine coreba_python runs (written into its config parameters)")
    opt.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                     help="its precision: bf16 (openvino; refused at load on a CPU without AVX512_BF16/AMX) or "
                          "int8 (a model from export/quantize.py, given with --python-model)")
    opt.add_argument("--python-model", type=Path, default=None,
                     help="the model file coreba_python loads, if not --onnx: an int8 .onnx or OpenVINO .xml (+.bin)")
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
                                   intra_op_threads=args.intra_op_threads, python_engine=args.python_engine,
                                   precision=args.precision, python_model=args.python_model)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, folder in written.items():
        print(f"{name:20s} {folder}")
    print(f"ensemble {ENSEMBLE!r} runs {ENGINE_MODELS[args.engine]!r}; repository checked against ModelConfig")
    return 0


if __name__ == "__main__":
    sys.exit(main())
