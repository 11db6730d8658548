"""Write a Triton model repository for COREBA from an exported END-TO-END ONNX file (and, when given, a TensorRT
plan built from it).

Usage::

    python export/to_onnx.py --end-to-end                    # artifacts/coreba-e2e.onnx
    python serving/build_repository.py --onnx artifacts/coreba-e2e.onnx --output artifacts/model_repository \\
        [--plan artifacts/coreba-e2e.plan] [--max-batch-size 8] [--baseline artifacts/coreba.onnx] ...

Models written (``<output>/<model>/config.pbtxt`` + ``<output>/<model>/1/...`` + ``<output>/<model>/warmup/``),
each running the end-to-end graph in ONE step (inputs + duration in, the answer out):

* ``coreba``       Python backend running ONNX Runtime (CPU, or CUDA with ``--python-gpu``): the model clients
                   call, what CI serves.
* ``coreba_onnx``  Triton's ONNX Runtime backend (NGC images), GPU instances unless ``--onnx-cpu``, TensorRT
                   acceleration of ONNX Runtime with ``--onnx-tensorrt``.
* ``coreba_trt``   Triton's TensorRT backend, only when ``--plan`` is given.
* with ``--baseline RAW.onnx``: the two-step path of before (``serving.baseline``), for the load test only.

Every ``config.pbtxt`` is built as Triton's ModelConfig message and the written repository is re-read
and checked (:mod:`serving.config_check`) before this returns. Model dims and K come from the metadata the
exporter stores in the ONNX file, so the repository always matches the graph it serves.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from coreba.config import CorebaConfig
from serving import model_configs as configs
from serving.baseline import BASELINE, BASELINE_MODELS, write_baseline
from serving.config_check import check_repository
from serving.model_configs import Batching, TensorRTAcceleration, warmup_sample
from serving.spec import ALL_MODELS, ENGINE_MODELS, ONNX_FILENAME, PLAN_FILENAME, SERVED, WARMUP_FOLDER

VERSION = "1"


def read_graph(onnx_path: str | Path, graph: str = "end_to_end") -> tuple[CorebaConfig, dict[str, str]]:
    """The :class:`CorebaConfig` and metadata the exporter stored in the ONNX file, which must hold ``graph``
    ("end_to_end": the served graph; "raw": the baseline's)."""
    from export.onnx_export import read_metadata

    metadata = read_metadata(onnx_path)
    if "config" not in metadata:
        raise ValueError(f"{onnx_path} has no 'config' metadata: export it with export/to_onnx.py")
    found = metadata.get("graph", "raw")
    if found != graph:
        hint = "export/to_onnx.py --end-to-end" if graph == "end_to_end" else "export/to_onnx.py (no --end-to-end)"
        raise ValueError(f"{onnx_path} holds the {found} graph; this needs the {graph} graph: export it with {hint}")
    return CorebaConfig.from_json(metadata["config"]), metadata


def _write_model(output: Path, config, files: dict[str, Path], cfg: CorebaConfig) -> Path:
    """``output/<name>/config.pbtxt``, the version folder with ``files`` (name in folder -> source), and the
    warm-up sample the config's ``model_warmup`` reads (``warmup/<input name>``, raw row-major bytes)."""
    model_dir = output / config.name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    (model_dir / VERSION).mkdir(parents=True)
    (model_dir / WARMUP_FOLDER).mkdir()
    (model_dir / "config.pbtxt").write_text(configs.to_pbtxt(config))
    for name, source in files.items():
        shutil.copyfile(source, model_dir / VERSION / name)
    for name, array in warmup_sample(cfg).items():
        (model_dir / WARMUP_FOLDER / name).write_bytes(array.tobytes())
    return model_dir


def build_repository(onnx_path: str | Path, output: str | Path, plan_path: str | Path | None = None,
                     batching: Batching | None = None, onnx_kind: str = "gpu", python_kind: str = "cpu",
                     tensorrt: TensorRTAcceleration | None = None, instances: int = 1,
                     graph_optimization: str = "all", intra_op_threads: int = 0,
                     baseline_onnx: str | Path | None = None) -> dict[str, Path]:
    """Write the repository and return ``{model name: model folder}``; raises ``ValueError`` on bad options
    and :class:`serving.config_check.ConfigCheckError` if a written config would not load."""
    onnx_path, output = Path(onnx_path), Path(output)
    for what, path in (("ONNX file", onnx_path), ("TensorRT plan", plan_path), ("baseline ONNX file", baseline_onnx)):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"no {what} at {path}")
    batching = batching or Batching()
    cfg, metadata = read_graph(onnx_path)
    top_k = int(metadata["top_k"])
    if baseline_onnx is not None:
        baseline_cfg, _ = read_graph(baseline_onnx, "raw")
        if baseline_cfg.to_dict() != cfg.to_dict():
            raise ValueError(f"the baseline graph {baseline_onnx} was exported from another model config than "
                             f"{onnx_path}")

    output.mkdir(parents=True, exist_ok=True)
    for stale in (*ALL_MODELS, *BASELINE_MODELS):  # a repository built earlier must not keep a stale model
        if (output / stale).is_dir():
            shutil.rmtree(output / stale)
    python_file = Path(__file__).resolve().parent / "templates" / "coreba_python" / "model.py"
    written = {
        SERVED: _write_model(output, configs.python_config(cfg, batching, top_k, python_kind, instances,
                                                           graph_optimization, intra_op_threads),
                             {"model.py": python_file, ONNX_FILENAME: onnx_path}, cfg),
        ENGINE_MODELS["onnx"]: _write_model(output, configs.onnx_config(cfg, batching, top_k, onnx_kind, instances,
                                                                        tensorrt),
                                            {ONNX_FILENAME: onnx_path}, cfg),
    }
    if plan_path is not None:
        written[ENGINE_MODELS["trt"]] = _write_model(output, configs.trt_config(cfg, batching, top_k, instances),
                                                     {PLAN_FILENAME: Path(plan_path)}, cfg)
    if baseline_onnx is not None:
        written.update(write_baseline(output, Path(baseline_onnx), cfg, batching.max_batch_size, top_k, VERSION))
    check_repository(output)
    return written


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    required = parser.add_argument_group("required")
    required.add_argument("--onnx", required=True, type=Path,
                          help="END-TO-END ONNX file (export/to_onnx.py --end-to-end)")
    required.add_argument("--output", required=True, type=Path, help="model repository folder to write")
    opt = parser.add_argument_group("engine")
    opt.add_argument("--plan", type=Path, default=None,
                     help="TensorRT plan built from the end-to-end ONNX file: also write coreba_trt")
    opt.add_argument("--python-gpu", action="store_true",
                     help="coreba on GPU instances (ONNX Runtime CUDA provider) instead of CPU")
    opt.add_argument("--onnx-cpu", action="store_true", help="coreba_onnx on CPU instances instead of GPU")
    opt.add_argument("--onnx-tensorrt", action="store_true",
                     help="accelerate coreba_onnx with ONNX Runtime's TensorRT execution provider")
    opt.add_argument("--tensorrt-precision", choices=("FP16", "FP32"), default="FP16")
    opt.add_argument("--tensorrt-cache", default=None, help="server-side folder caching TensorRT engines")
    opt.add_argument("--instances", type=int, default=1, help="instances per model")
    opt.add_argument("--graph-optimization", choices=("disabled", "basic", "extended", "all"), default="all",
                     help="ONNX Runtime graph optimization level of coreba")
    opt.add_argument("--intra-op-threads", type=int, default=0,
                     help="ONNX Runtime threads per instance of coreba (0 = the CPU cores divided among instances)")
    opt.add_argument("--baseline", type=Path, default=None, metavar="RAW_ONNX",
                     help="also write the two-step path of before (raw graph + post-processing model, ensemble "
                          f"{BASELINE!r}) for the load test's comparison")
    batch = parser.add_argument_group("batching")
    batch.add_argument("--max-batch-size", type=int, default=Batching.max_batch_size)
    batch.add_argument("--preferred-batch-sizes", type=int, nargs="*", default=list(Batching.preferred_batch_sizes))
    batch.add_argument("--max-queue-delay-us", type=int, default=Batching.max_queue_delay_us)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        batching = Batching(args.max_batch_size, tuple(args.preferred_batch_sizes), args.max_queue_delay_us)
        tensorrt = TensorRTAcceleration(args.tensorrt_precision, engine_cache_path=args.tensorrt_cache) \
            if args.onnx_tensorrt else None
        written = build_repository(args.onnx, args.output, args.plan, batching,
                                   onnx_kind="cpu" if args.onnx_cpu else "gpu",
                                   python_kind="gpu" if args.python_gpu else "cpu", tensorrt=tensorrt,
                                   instances=args.instances, graph_optimization=args.graph_optimization,
                                   intra_op_threads=args.intra_op_threads, baseline_onnx=args.baseline)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, folder in written.items():
        print(f"{name:28s} {folder}")
    print(f"clients call {SERVED!r} (one step: the end-to-end graph on ONNX Runtime); repository checked against "
          "ModelConfig")
    return 0


if __name__ == "__main__":
    sys.exit(main())
