"""Build a TensorRT engine (.plan) from the exported COREBA ONNX file and check it against eager PyTorch.

    python export/to_tensorrt.py --onnx artifacts/coreba.onnx --output artifacts/coreba-fp16.plan
    python export/to_tensorrt.py --onnx artifacts/coreba.onnx --output artifacts/coreba-fp32.plan \\
        --precision fp32 --checkpoint runs/best --timing-cache artifacts/trt.cache --max-batch 32

Needs TensorRT 10 (Python package ``tensorrt``) and a CUDA GPU. The equivalent ``trtexec`` command is
printed first, so the same engine can be built without Python. Success is reported only after the
engine matches eager PyTorch on every parity case inside the profile (export/tensorrt_build.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coreba.engines.base import EngineUnavailable
from coreba.engines.tensorrt_engine import require_cuda, require_tensorrt
from export.tensorrt_build import (
    PRECISIONS,
    ProfileError,
    ShapeProfile,
    TensorRTBuildError,
    build_engine,
    check_engine_parity,
    end_to_end_top_k,
    load_checkpoint,
    model_dims,
    read_model_config,
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
    optional.add_argument("--precision", choices=PRECISIONS, default="fp16",
                          help="fp32 (TF32 off), tf32, fp16 or bf16 (default: fp16)")
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
        config = read_model_config(args.onnx)
        dims = model_dims(config)
        profile = ShapeProfile.for_model(dims, **{f"{k}_{a}": getattr(args, f"{k}_{a}")
                                                  for a in ("batch", "clips", "tokens") for k in ("min", "opt", "max")})
        profile.check_fits(dims)
    except (OSError, ProfileError, TensorRTBuildError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("equivalent trtexec command:\n  " + trtexec_command(args.onnx, args.output, profile, args.precision, dims,
                                                              args.timing_cache, args.workspace_gb,
                                                              end_to_end_top_k(args.onnx) is not None))
    try:
        require_tensorrt()  # before loading (or training) the checkpoint: fail fast where TensorRT cannot run
        require_cuda()
        model = load_checkpoint(args.checkpoint, config)
        print(f"building a {args.precision} TensorRT engine from {args.onnx} ...")
        plan = build_engine(args.onnx, args.output, profile, args.precision, args.timing_cache, args.workspace_gb)
        report = check_engine_parity(plan, model, profile, args.precision)
    except EngineUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (TensorRTBuildError, ParityError) as err:
        print(f"TENSORRT BUILD FAILED: {err}", file=sys.stderr)
        return 1
    print(report.table())
    print(f"OK: {plan} ({plan.stat().st_size / 1e6:.2f} MB) matches eager PyTorch on every case inside the profile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
