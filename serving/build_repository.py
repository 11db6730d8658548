"""Write a Triton model repository for COREBA from an exported END-TO-END ONNX file (and, when given, a TensorRT
plan built from it).

Usage::

    python export/to_onnx.py --end-to-end                    # artifacts/coreba-e2e.onnx
    python serving/build_repository.py --onnx artifacts/coreba-e2e.onnx --output artifacts/model_repository \\
        [--plan artifacts/coreba-e2e.plan] [--max-batch-size 8] [--baseline artifacts/coreba.onnx] ...
    # coreba on OpenVINO bf16, or on an int8 model of the end-to-end graph from export/quantize.py:
    ... --python-engine openvino --precision bf16
    ... --python-engine openvino --precision int8 --python-model artifacts/coreba-e2e-int8-openvino.xml

Models written (``<output>/<model>/config.pbtxt`` + ``<output>/<model>/1/...`` + ``<output>/<model>/warmup/``),
each running the end-to-end graph in ONE step (inputs + duration in, the answer out):

* ``coreba``       Python backend running ONNX Runtime (CPU, or CUDA with ``--python-gpu``): the model clients
                   call, what CI serves; or OpenVINO, at fp32, bf16 or int8 (``--python-engine``, ``--precision``,
                   ``--python-model``), written into its config parameters.
* ``coreba_onnx``  Triton's ONNX Runtime backend (NGC images), GPU instances unless ``--onnx-cpu``, TensorRT
                   acceleration of ONNX Runtime with ``--onnx-tensorrt``.
* ``coreba_trt``   Triton's TensorRT backend, only when ``--plan`` is given.
* with ``--baseline RAW.onnx``: the two-step path of before (``serving.baseline``), for the load test only.

Nothing is written before everything is checked, and nothing is overwritten that this builder did not
write. The models are built in a staging folder beside ``output``; every ``config.pbtxt`` is built as
Triton's ModelConfig message, re-read and checked (:mod:`serving.config_check`) together with any other
model already in ``output`` (a foreign model that Triton would reject is reported before anything is
written); coreba's folders in ``output`` (the one-step models, the baseline's, and those of earlier layouts,
``serving.spec.LEGACY_MODELS``) are replaced or removed only if they hold exactly what an earlier build
recorded in its marker (:mod:`serving.repository_marker`), unless ``force``; then each folder is swapped in
with a rename, and the marker records every file written (warm-up data and baseline models included). Model
dims and K come from the metadata the exporter stores in the ONNX file (read by :mod:`coreba.onnx_io`), so
the repository always matches the graph it serves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from coreba.atomic import check_output_path, replace_directory, staging_directory
from coreba.config import CorebaConfig
from coreba.engines import model_file_metadata
from coreba.onnx_io import config_of, graph_of, read_graph, top_k_of
from serving import model_configs as configs
from serving.baseline import BASELINE, BASELINE_MODELS, baseline_models
from serving.config_check import check_models, model_dirs
from serving.model_configs import PYTHON_ENGINES, Batching, PythonEngine, TensorRTAcceleration, warmup_sample
from serving.repository_marker import NotOursError, fingerprints, not_ours, read_marker, write_marker
from serving.spec import (
    ALL_MODELS,
    ENGINE_MODELS,
    LEGACY_MODELS,
    ONNX_FILENAME,
    PLAN_FILENAME,
    SERVED,
    WARMUP_FOLDER,
)

VERSION = "1"
SHOWN = 3  # entries quoted in an error; the count says how many there are
PYTHON_MODEL = Path(__file__).resolve().parent / "templates" / "coreba_python" / "model.py"
# every folder this builder may write or remove: what it writes now, and what earlier layouts wrote
OWNED_MODELS: tuple[str, ...] = (*ALL_MODELS, *BASELINE_MODELS, *LEGACY_MODELS)


def _write_model(output: Path, config, files: dict[str, Path], cfg: CorebaConfig) -> Path:
    """``output/<name>/config.pbtxt``, the version folder with ``files`` (name in folder -> source), and, when
    the config has ``model_warmup``, the warm-up sample it reads (``warmup/<input name>``, raw row-major bytes)."""
    model_dir = output / config.name
    (model_dir / VERSION).mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(configs.to_pbtxt(config))
    for name, source in files.items():
        shutil.copyfile(source, model_dir / VERSION / name)
    if config.model_warmup:
        (model_dir / WARMUP_FOLDER).mkdir()
        for name, array in warmup_sample(cfg).items():
            (model_dir / WARMUP_FOLDER / name).write_bytes(array.tobytes())
    return model_dir


def _python_engine(onnx_path: Path, cfg: CorebaConfig, top_k: int, engine: str, precision: str,
                   python_model: str | Path | None) -> tuple[PythonEngine, dict[str, Path]]:
    """What ``coreba`` runs and the files it loads: the end-to-end graph itself, or another model file of it (an
    int8 .onnx, an OpenVINO .xml with its .bin), checked to be the same model (config) and graph (end-to-end, K)."""
    python_model = Path(python_model) if python_model is not None else None
    if python_model is None or python_model.resolve() == onnx_path.resolve():
        if precision == "int8":
            raise ValueError("--precision int8 serves a quantized model: give it with --python-model (write one with "
                             f"`python export/quantize.py --onnx {onnx_path} --backend {engine}`)")
        return PythonEngine(engine, precision), {ONNX_FILENAME: onnx_path}
    if not python_model.is_file():
        raise FileNotFoundError(f"no model file at {python_model}")
    choice = PythonEngine(engine, precision, f"model.{precision}{python_model.suffix}")
    metadata = model_file_metadata(python_model)
    if graph_of(metadata) != "end_to_end" or top_k_of(metadata, python_model) != top_k:
        raise ValueError(f"{python_model} is not the end-to-end graph of {onnx_path} (graph "
                         f"{graph_of(metadata)!r}, K {metadata.get('top_k')}): quantize the --end-to-end export")
    if config_of(metadata, python_model).to_dict() != cfg.to_dict():
        raise ValueError(f"{python_model} is not the model of {onnx_path} (their configs differ)")
    files = {choice.model_filename: python_model}
    if python_model.suffix == ".xml":  # the IR's weights, found by OpenVINO from the .xml name
        files[Path(choice.model_filename).with_suffix(".bin").name] = python_model.with_suffix(".bin")
    return choice, files


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
                     batching: Batching | None = None, onnx_kind: str = "gpu", python_kind: str = "cpu",
                     tensorrt: TensorRTAcceleration | None = None, instances: int = 1,
                     graph_optimization: str = "all", intra_op_threads: int = 0,
                     baseline_onnx: str | Path | None = None, force: bool = False, python_engine: str = "onnxruntime",
                     precision: str = "fp32", python_model: str | Path | None = None,
                     cpu_streams: int = 0) -> dict[str, Path]:
    """Write the repository and return ``{model name: model folder}``. ``onnx_path`` is the END-TO-END graph
    (``export/to_onnx.py --end-to-end``); ``baseline_onnx``, the RAW graph of the same model, adds the two-step
    path of before (:mod:`serving.baseline`) for the load test. ``coreba`` runs ``python_engine`` at
    ``precision`` on ``python_model`` (default: ``onnx_path``; an int8 model of it from export/quantize.py).

    Raises, before writing anything: ``ValueError`` on bad options; :class:`coreba.onnx_io.OnnxFileError` for
    an ONNX file that is not a whole exported model or holds the other graph; :class:`serving.config_check.
    ConfigCheckError` if a config (coreba's, or another model's in ``output``) would not load;
    :class:`serving.repository_marker.NotOursError` where coreba's folders in ``output`` hold anything this
    builder did not write (``force`` replaces them anyway); :class:`coreba.atomic.OutputPathError` for an
    unwritable path."""
    onnx_path, output = Path(onnx_path), Path(output)
    for what, path in (("ONNX file", onnx_path), ("TensorRT plan", plan_path), ("baseline ONNX file", baseline_onnx)):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"no {what} at {path}")
    check_output_path(output, kind="dir")
    batching = batching or Batching()
    cfg, metadata = read_graph(onnx_path, "end_to_end")
    top_k = int(metadata["top_k"])  # read_graph checked it
    if baseline_onnx is not None:
        baseline_cfg, _ = read_graph(baseline_onnx, "raw")
        if baseline_cfg.to_dict() != cfg.to_dict():
            raise ValueError(f"the baseline graph {baseline_onnx} was exported from another model config than "
                             f"{onnx_path}")
    engine_choice, python_files = _python_engine(onnx_path, cfg, top_k, python_engine, precision, python_model)

    existing = output.is_dir()
    marker = read_marker(output) if existing and not force else {}
    foreign = [d for d in model_dirs(output) if d.name not in OWNED_MODELS] if existing else []
    with staging_directory(output) as stage:
        written = {
            SERVED: _write_model(stage, configs.python_config(cfg, batching, top_k, python_kind, instances,
                                                              graph_optimization, intra_op_threads, engine_choice,
                                                              cpu_streams),
                                 {"model.py": PYTHON_MODEL, **python_files}, cfg),
            ENGINE_MODELS["onnx"]: _write_model(stage, configs.onnx_config(cfg, batching, top_k, onnx_kind, instances,
                                                                           tensorrt),
                                                {ONNX_FILENAME: onnx_path}, cfg),
        }
        if plan_path is not None:
            written[ENGINE_MODELS["trt"]] = _write_model(stage, configs.trt_config(cfg, batching, top_k, instances),
                                                         {PLAN_FILENAME: Path(plan_path)}, cfg)
        if baseline_onnx is not None:
            for name, (config, files) in baseline_models(Path(baseline_onnx), cfg, batching.max_batch_size,
                                                         top_k).items():
                written[name] = _write_model(stage, config, files, cfg)
        check_models([*written.values(), *foreign])  # coreba's configs, and every other model served beside them
        if existing and not force:
            problems = not_ours(output, OWNED_MODELS, marker)
            if problems:
                raise NotOursError(f"{output} holds {len(problems)} entr{'y' if len(problems) == 1 else 'ies'} "
                                   f"build_repository would replace but did not write: {', '.join(problems[:SHOWN])}"
                                   f"{', ...' if len(problems) > SHOWN else ''}; move them away or pass --force")
        names = list(written)
        # e.g. an old coreba_trt, the baseline of a build with --baseline, an earlier layout's ensemble
        stale = [n for n in OWNED_MODELS if n not in written and (output / n).exists()]
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
    required.add_argument("--onnx", required=True, type=Path,
                          help="END-TO-END ONNX file (export/to_onnx.py --end-to-end)")
    required.add_argument("--output", required=True, type=Path, help="model repository folder to write")
    opt = parser.add_argument_group("engine")
    opt.add_argument("--force", action="store_true",
                     help="replace coreba's model folders in --output even where they hold files this builder did "
                          "not write (other models in --output are never touched)")
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
                     help="engine threads per instance of coreba (0 = the CPU cores divided among instances)")
    opt.add_argument("--cpu-streams", type=int, default=0,
                     help="ONNX Runtime on CPU: one-thread sessions running batches side by side in each instance, "
                          "while a lone query on a quiet server uses every thread (0 = one per engine thread, "
                          "1 = off: every batch on one multi-thread session, answered before the next)")
    opt.add_argument("--python-engine", choices=PYTHON_ENGINES, default="onnxruntime",
                     help="the engine coreba runs (written into its config parameters)")
    opt.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                     help="its precision: bf16 (openvino; refused at load on a CPU without AVX512_BF16/AMX) or int8 "
                          "(an int8 model of the end-to-end graph from export/quantize.py, given with --python-model)")
    opt.add_argument("--python-model", type=Path, default=None,
                     help="the model file coreba loads, if not --onnx: an int8 .onnx or OpenVINO .xml (+.bin)")
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
                                   intra_op_threads=args.intra_op_threads, baseline_onnx=args.baseline,
                                   cpu_streams=args.cpu_streams,
                                   force=args.force, python_engine=args.python_engine, precision=args.precision,
                                   python_model=args.python_model)
    except (ValueError, OSError) as err:  # every error here is one line naming the file or the option
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, folder in written.items():
        print(f"{name:28s} {folder}")
    print(f"clients call {SERVED!r} (one step: the end-to-end graph on ONNX Runtime); repository checked against "
          "ModelConfig")
    return 0


if __name__ == "__main__":
    sys.exit(main())
