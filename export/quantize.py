"""Quantize an exported COREBA graph to int8 (static, calibrated on data) and accept it only inside the accuracy gate.

    python export/quantize.py --onnx artifacts/coreba.onnx --backend openvino --calibration synthetic \\
        --output artifacts/coreba-int8-openvino.xml
    python export/quantize.py --onnx artifacts/coreba.onnx --backend onnxruntime --calibration synthetic \\
        --output artifacts/coreba-int8-onnxruntime.onnx
    # for serving: an int8 model of the END-TO-END graph (the served model's), gated the same way
    python export/quantize.py --onnx artifacts/coreba-e2e.onnx --backend openvino
    # real features: calibrate on train, gate on val (and on the synthetic set too, if the model is the demo's)
    python export/quantize.py --onnx model.onnx --backend openvino --calibration highlight_train_release.jsonl \\
        --gate-set highlight_val_release.jsonl --video-feature-dirs feats/slowfast feats/clip \\
        --text-feature-dir feats/clip_text --output model-int8.xml

Steps: calibration feeds (single queries) -> NNCF (openvino: an IR, .xml + .bin) or ONNX Runtime quantize_static
(onnxruntime: a QDQ .onnx), written beside the target under a temporary name -> the int8 engine and the fp32
engine of the same backend score every gate set (>= 500 queries) -> the table is printed -> only if every
metric stays within 1.0 point is the file moved onto --output (exit 0); otherwise it is deleted and the command
exits 1, leaving any earlier --output untouched. What stays in fp32: see export/quantization.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coreba.atomic import atomic_file  # noqa: E402
from coreba.engines import load_engine  # noqa: E402
from coreba.onnx_io import config_of, read_metadata  # noqa: E402
from export.accuracy import GateSetTooSmall, accuracy_gate, require_gate_size, score_engine  # noqa: E402
from export.datasets import SYNTHETIC, calibration_feeds, resolve_set  # noqa: E402
from export.quantization import BACKENDS, QuantizationError, quantize  # noqa: E402

SUFFIX = {"openvino": ".xml", "onnxruntime": ".onnx"}
COMPANIONS = {"openvino": (".bin",), "onnxruntime": ()}
DEFAULT_CALIBRATION_SIZE = 128


class GateRefused(RuntimeError):
    """The int8 model fell outside the accuracy gate on at least one set."""


def default_output(onnx: Path, backend: str) -> Path:
    return onnx.with_name(f"{onnx.stem}-int8-{backend}{SUFFIX[backend]}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    required = parser.add_argument_group("Required arguments")
    required.add_argument("--onnx", required=True, type=Path, help="the fp32 ONNX file from export/to_onnx.py")
    required.add_argument("--backend", required=True, choices=BACKENDS,
                          help="openvino (NNCF -> OpenVINO IR .xml/.bin) or onnxruntime (QDQ .onnx)")
    optional = parser.add_argument_group("Optional arguments")
    optional.add_argument("--output", type=Path, default=None,
                          help="where to write the int8 model (default: <onnx stem>-int8-<backend>.xml|.onnx)")
    optional.add_argument("--calibration", default=SYNTHETIC,
                          help="'synthetic' (default: the demo checkpoint's data, a split its training never saw) "
                               "or a QVHighlights-format annotation file (.jsonl) of your features")
    optional.add_argument("--calibration-size", type=int, default=DEFAULT_CALIBRATION_SIZE,
                          help=f"queries used for calibration (default: {DEFAULT_CALIBRATION_SIZE})")
    optional.add_argument("--gate-set", nargs="+", default=[SYNTHETIC],
                          help="sets the accuracy gate scores (each >= 500 queries): 'synthetic' (default: the demo "
                               "checkpoint's 500-query gate split) and/or annotation files (.jsonl)")
    optional.add_argument("--video-feature-dirs", nargs="+", type=Path, default=None,
                          help="feature folders of the .jsonl sets, SlowFast then CLIP ({vid}.npz)")
    optional.add_argument("--text-feature-dir", type=Path, default=None,
                          help="query feature folder of the .jsonl sets (qid{qid}.npz)")
    args = parser.parse_args(argv)
    args.output = args.output or default_output(args.onnx, args.backend)
    if args.output.suffix != SUFFIX[args.backend]:
        parser.error(f"--backend {args.backend} writes a {SUFFIX[args.backend]} file; got --output {args.output}")
    if args.calibration_size < 1:
        parser.error("--calibration-size must be >= 1")
    return args


def run(args: argparse.Namespace) -> int:
    config = config_of(read_metadata(args.onnx), args.onnx)  # a raw or an end-to-end graph
    dirs = (args.video_feature_dirs, args.text_feature_dir)
    calibration = resolve_set(args.calibration, "calibration", config, *dirs)
    gate_sets = [resolve_set(spec, "gate", config, *dirs) for spec in args.gate_set]
    for eval_set in gate_sets:  # before the minutes of quantization, not after
        require_gate_size(eval_set)
    feeds = calibration_feeds(calibration, config, args.calibration_size)
    print(f"calibrating {args.backend} int8 on {len(feeds)} queries of {calibration.name}")
    reference = load_engine(args.backend, args.onnx, precision="fp32")
    with tempfile.TemporaryDirectory(prefix="coreba_quantize_") as work, \
            atomic_file(args.output, COMPANIONS[args.backend]) as tmp:
        report = quantize(args.onnx, args.backend, feeds, tmp, calibration.name, Path(work))
        print(report.summary())
        candidate = load_engine(args.backend, tmp, precision="int8")
        verdicts = []
        for eval_set in gate_sets:
            gate = accuracy_gate(reference, candidate, eval_set, config, reference_name=f"{args.backend} fp32",
                                 candidate_name=f"{args.backend} int8",
                                 reference_metrics=score_engine(reference, eval_set, config))
            print(gate.table())
            verdicts.append(gate.ok)
        if not all(verdicts):
            raise GateRefused(f"{args.backend} int8 is outside the accuracy gate; {args.output} was not written")
    print(f"OK: wrote {args.output}" + (" (+ .bin)" if args.backend == "openvino" else "")
          + f"; load it with Predictor.from_pretrained({str(args.output)!r}, engine={args.backend!r}, "
            "precision='int8')")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except GateRefused as err:
        print(f"REFUSED: {err}", file=sys.stderr)
        return 1
    except (GateSetTooSmall, QuantizationError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
