"""Export a COREBA checkpoint to ONNX (recurrent loop unrolled, one copy of each weight) and check it.

    python export/to_onnx.py                                  # the demo checkpoint (trained on first use)
    python export/to_onnx.py --checkpoint runs/best --output artifacts/coreba.onnx --fp16 --optimize ort
    python export/to_onnx.py --end-to-end                     # the served graph: duration in, the answer out

Success is reported only after the checker, shape inference, the size budget and an ONNX Runtime parity
run against eager PyTorch at several shapes all pass (see export/onnx_export.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.onnx_export import OPTIMIZERS, ExportError, export_onnx
from export.spec import DEFAULT_OPSET, DEFAULT_TOP_K
from export.validate import ParityError

DEFAULT_OUTPUT = Path("artifacts/coreba.onnx")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    optional = parser.add_argument_group("Optional arguments")
    optional.add_argument("--checkpoint", type=Path, default=None,
                          help="a save_pretrained directory (config.json + model.safetensors); default: the demo "
                               "checkpoint trained on the synthetic dataset, trained on first use and cached")
    optional.add_argument("--output", type=Path, default=None,
                          help=f"the ONNX file to write (default: {DEFAULT_OUTPUT}; coreba-e2e.onnx with --end-to-end, "
                               "-fp16 before .onnx with --fp16)")
    optional.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    optional.add_argument("--fp16", action="store_true",
                          help="export an fp16 graph (float32 inputs/outputs; parity <= 1e-2 on scores and spans)")
    optional.add_argument("--optimize", nargs="*", default=[], choices=sorted(OPTIMIZERS),
                          help="also write optimized copies: 'ort' (ONNX Runtime offline graph optimizations) "
                               "and/or 'onnxslim'; each is parity-checked too")
    optional.add_argument("--end-to-end", action="store_true",
                          help="export the graph with the post-processing inside: one more input 'duration' (B,) "
                               "seconds; outputs moments (B, K, 3) [start_s, end_s, score] sorted by score, saliency "
                               "(B, Lv), num_clips (B, 1); parity-checked against eager PyTorch + postprocess")
    optional.add_argument("--top-k", type=int, default=DEFAULT_TOP_K,
                          help=f"moments per query of the --end-to-end graph (default: {DEFAULT_TOP_K}, at most the "
                               "model's number of queries)")
    return parser.parse_args(argv)


def default_output(fp16: bool, end_to_end: bool) -> Path:
    """artifacts/coreba.onnx, coreba-fp16.onnx, coreba-e2e.onnx or coreba-e2e-fp16.onnx."""
    name = "coreba" + ("-e2e" if end_to_end else "") + ("-fp16" if fp16 else "")
    return DEFAULT_OUTPUT.with_name(name + DEFAULT_OUTPUT.suffix)


def load_model(checkpoint: Path | None):
    from coreba.model import CheckpointError, Coreba

    if checkpoint is None:
        from coreba.pretrained import demo_checkpoint

        checkpoint = demo_checkpoint()
        print(f"no --checkpoint given: using the demo checkpoint at {checkpoint} "
              "(a full-size COREBA trained briefly on SYNTHETIC features, for trying the pipeline)")
    try:
        return Coreba.from_pretrained(checkpoint)
    except CheckpointError as err:
        sys.exit(f"error: {err}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = load_model(args.checkpoint)
    output = args.output or default_output(args.fp16, args.end_to_end)
    cfg = model.config
    print(f"exporting COREBA (N_r={cfg.num_recurrent} {cfg.recurrent_mode}, N_b={cfg.num_balance_tokens}, "
          f"{model.num_parameters():,} parameters) to {output} with opset {args.opset}"
          f"{' in fp16' if args.fp16 else ''}{' end-to-end (answer out)' if args.end_to_end else ''} ...")
    try:
        result = export_onnx(model, output, opset=args.opset, fp16=args.fp16, optimize=tuple(args.optimize),
                             end_to_end=args.end_to_end, top_k=args.top_k)
    except (ExportError, ParityError, ValueError) as err:
        print(f"EXPORT FAILED: {err}", file=sys.stderr)
        return 1
    print(result.summary())
    print(f"OK: {output} passed onnx.checker (full), shape inference and the parity checks above")
    return 0


if __name__ == "__main__":
    sys.exit(main())
