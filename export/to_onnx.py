"""Export a COREBA checkpoint to ONNX (recurrent loop unrolled, one copy of each weight) and check it.

    python export/to_onnx.py                                  # the demo checkpoint (trained on first use)
    python export/to_onnx.py --checkpoint runs/best --output artifacts/coreba.onnx --fp16 --optimize ort
    python export/to_onnx.py --end-to-end                     # the served graph: duration in, the answer out

Success is reported only after the checker, shape inference, the size budget and an ONNX Runtime parity
run against eager PyTorch at several shapes all pass (see export/onnx_export.py). The output path is
checked first; the file (and each optimized copy) replaces the previous one only once every check passed,
so a failure, Ctrl-C or SIGTERM leaves it as it was (exit 1, or 130 when interrupted).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from coreba.atomic import OutputPathError, check_output_path
from export.onnx_export import OPTIMIZERS, ExportError, check_opset, export_onnx, optimized_path
from export.spec import DEFAULT_OPSET, DEFAULT_TOP_K, MAX_OPSET, MIN_OPSET
from export.validate import ParityError

INTERRUPTED = 128 + signal.SIGINT  # the shell's exit status for a command stopped by Ctrl-C


def _opset(text: str) -> int:
    """argparse type: an opset the export can produce and check, else an error naming the supported range."""
    try:
        return check_opset(int(text))
    except (ValueError, ExportError) as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a supported opset: choose {MIN_OPSET}..{MAX_OPSET}") \
            from err


def _top_k(text: str) -> int:
    """argparse type: a positive number of moments."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of moments")
    return value


DEFAULT_OUTPUT = Path("artifacts/coreba.onnx")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM (a job scheduler, ``kill``) unwind like Ctrl-C, so the partial file is removed; main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    optional = parser.add_argument_group("Optional arguments")
    optional.add_argument("--checkpoint", type=Path, default=None,
                          help="a save_pretrained directory (config.json + model.safetensors); default: the demo "
                               "checkpoint trained on the synthetic dataset, trained on first use and cached")
    optional.add_argument("--output", type=Path, default=None,
                          help=f"the ONNX file to write (default: {DEFAULT_OUTPUT}; coreba-e2e.onnx with --end-to-end, "
                               "-fp16 before .onnx with --fp16)")
    optional.add_argument("--opset", type=_opset, default=DEFAULT_OPSET,
                          help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default: {DEFAULT_OPSET})")
    optional.add_argument("--fp16", action="store_true",
                          help="export an fp16 graph (float32 inputs/outputs; parity <= 1e-2 on scores and spans)")
    optional.add_argument("--optimize", nargs="*", default=[], choices=sorted(OPTIMIZERS),
                          help="also write optimized copies: 'ort' (ONNX Runtime offline graph optimizations) "
                               "and/or 'onnxslim'; each is parity-checked too")
    optional.add_argument("--end-to-end", action="store_true",
                          help="export the graph with the post-processing inside: one more input 'duration' (B,) "
                               "seconds; outputs moments (B, K, 3) [start_s, end_s, score] sorted by score, saliency "
                               "(B, Lv), num_clips (B, 1); parity-checked against eager PyTorch + postprocess")
    optional.add_argument("--top-k", type=_top_k, default=DEFAULT_TOP_K,
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
    output = args.output or default_output(args.fp16, args.end_to_end)
    try:
        for path in (output, *(optimized_path(output, kind) for kind in args.optimize)):
            check_output_path(path)  # before loading (or training) the model and the ~30 s trace
    except OutputPathError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    model = load_model(args.checkpoint)
    cfg = model.config
    print(f"exporting COREBA (N_r={cfg.num_recurrent} {cfg.recurrent_mode}, N_b={cfg.num_balance_tokens}, "
          f"{model.num_parameters():,} parameters) to {output} with opset {args.opset}"
          f"{' in fp16' if args.fp16 else ''}{' end-to-end (answer out)' if args.end_to_end else ''} ...", flush=True)
    try:
        with sigterm_as_interrupt():
            result = export_onnx(model, output, opset=args.opset, fp16=args.fp16, optimize=tuple(args.optimize),
                                 end_to_end=args.end_to_end, top_k=args.top_k)
    except (ExportError, ParityError, OutputPathError, ValueError) as err:
        print(f"EXPORT FAILED: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: {output} left as it was, no partial file written", file=sys.stderr)
        return INTERRUPTED
    print(result.summary())
    print(f"OK: {output} passed onnx.checker (full), shape inference and the parity checks above")
    return 0


if __name__ == "__main__":
    sys.exit(main())
