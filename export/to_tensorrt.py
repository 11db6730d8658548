"""Build a TensorRT engine (.plan) from the exported COREBA ONNX file and check it against eager PyTorch.

    python export/to_tensorrt.py --onnx artifacts/coreba-fp16.onnx --output artifacts/coreba-fp16.plan
    python export/to_tensorrt.py --onnx artifacts/coreba.onnx --output artifacts/coreba-fp32.plan \\
        --checkpoint runs/best --timing-cache artifacts/trt.cache --max-batch 32
    python export/to_tensorrt.py --onnx artifacts/coreba.onnx --output artifacts/coreba-weak16.plan \\
        --precision fp16 --typing weak                      # TensorRT 10 only
    python export/to_tensorrt.py --onnx artifacts/coreba-e2e-fp16.onnx \\
        --output artifacts/coreba-e2e-fp16.plan             # the served graph (to_onnx.py --end-to-end --fp16)

Needs TensorRT 10 or 11 (Python package ``tensorrt``) and a CUDA GPU. Builds are strongly typed by default:
the engine computes in the ONNX graph's own types, so an fp16 engine comes from the fp16 export
(``python export/to_onnx.py --fp16``); ``--typing weak`` (fp16/bf16 kernels chosen by TensorRT for an fp32
graph) exists in TensorRT 10 only. The equivalent ``trtexec`` command is printed first, so the same engine
can be built without Python. Success is reported only after the engine matches eager PyTorch on every
parity case inside the profile (export/tensorrt_build.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coreba.atomic import check_output_path
from coreba.engines.base import EngineUnavailable
from coreba.engines.tensorrt_engine import require_cuda, require_tensorrt
from coreba.onnx_io import OnnxFileError, end_to_end_top_k, read_model_config
from export.tensorrt_build import (
    PRECISIONS,
    TYPINGS,
    PrecisionError,
    ProfileError,
    ShapeProfile,
    TensorRTBuildError,
    build_engine,
    check_engine_parity,
    check_supported,
    graph_precision,
    load_checkpoint,
    model_dims,
    plan_build,
    trtexec_command,
)
from export.validate import ParityError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    required = parser.add_argument_group("Required arguments")
    required.add_argument("--onnx", type=Path, required=True, help="the ONNX file written by export/to_onnx.py")
    required.add_argument("--output", type=Path, required=True, help="the TensorRT engine (.plan) to write")
    optional = parser.add_argument_group("Optional arguments")
    optional.add_argument("--checkpoint", type=Path, default=None,
                          help="the save_pretrained directory the ONNX file was exported from, for the parity "
                               "check (default: the demo checkpoint)")
    optional.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                          help="auto (the graph's own: fp32 with TF32 off for the fp32 export, fp16 for the fp16 "
                               "export), fp32, tf32, fp16 or bf16 (default: auto)")
    optional.add_argument("--typing", choices=TYPINGS, default="strong",
                          help="strong: the engine computes in the graph's types (TensorRT 10 and 11); weak: "
                               "TensorRT picks fp16/bf16 kernels for an fp32 graph (TensorRT 10 only) "
                               "(default: strong)")
    profile = parser.add_argument_group("Optimization profile (min <= opt <= max per axis)")
    for axis, (lo, opt, hi), what in (("batch", (1, 8, 64), "queries per batch"),
                                      ("clips", (1, None, None), "2 s video clips (Lv)"),
                                      ("tokens", (1, None, None), "query tokens (Lt)")):
        for kind, default in (("min", lo), ("opt", opt), ("max", hi)):
            shown = default if default is not None else "the model's max length"
            profile.add_argument(f"--{kind}-{axis}", type=int, default=default, metavar="N",
                                 help=f"{kind} {what} (default: {shown})")
    optional.add_argument("--timing-cache", type=Path, default=None,
                          help="TensorRT timing cache file, read if it exists and written after the build "
                               "(default: none)")
    optional.add_argument("--workspace-gb", type=float, default=None,
                          help="builder workspace limit in GiB (default: TensorRT's, the device memory)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_output_path(args.output)  # before the build: minutes of work must not end in an unwritable path
        config = read_model_config(args.onnx)
        dims = model_dims(config)
        profile = ShapeProfile.for_model(dims, **{f"{k}_{a}": getattr(args, f"{k}_{a}")
                                                  for a in ("batch", "clips", "tokens") for k in ("min", "opt", "max")})
        profile.check_fits(dims)
        plan = plan_build(graph_precision(args.onnx), args.precision, args.typing)
        top_k = end_to_end_top_k(args.onnx)  # an end-to-end graph: duration in the profile, its answer checked
    except (OSError, OnnxFileError, ProfileError, PrecisionError, TensorRTBuildError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.onnx}: {plan.graph_precision} graph -> {plan.typing}ly typed {plan.precision} engine"
          f"{f' (end-to-end, top {top_k})' if top_k is not None else ''}")
    print("equivalent trtexec command:\n  " + trtexec_command(args.onnx, args.output, profile, plan, dims,
                                                              args.timing_cache, args.workspace_gb,
                                                              end_to_end=top_k is not None))
    try:
        # before loading (or training) the checkpoint: fail fast where TensorRT cannot run or cannot build this
        check_supported(require_tensorrt(), plan)
        require_cuda()
        model = load_checkpoint(args.checkpoint, config)
        print(f"building a {plan.precision} TensorRT engine from {args.onnx} ...")
        reports = []  # the parity run checks the plan before it replaces the previous one
        plan_path = build_engine(args.onnx, args.output, profile, plan.precision, args.timing_cache,
                                 args.workspace_gb, plan.typing,
                                 check=lambda path: reports.append(check_engine_parity(path, model, profile,
                                                                                       plan.precision,
                                                                                       top_k=top_k)))
        report = reports[0]
    except (EngineUnavailable, PrecisionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (TensorRTBuildError, ParityError) as err:
        print(f"TENSORRT BUILD FAILED: {err}", file=sys.stderr)
        return 1
    print(report.table())
    print(f"OK: {plan_path} ({plan_path.stat().st_size / 1e6:.2f} MB) matches eager PyTorch on every case inside the "
          "profile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
