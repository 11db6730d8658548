"""The accuracy gate for a reduced-precision engine that has no file of its own to write (bf16 is a runtime setting):
score it and the same engine at fp32 on each gate set, print the table, exit 1 if it falls outside.

    python export/check_accuracy.py --engine openvino --precision bf16 --model artifacts/coreba.onnx
    python export/check_accuracy.py --engine torch --precision bf16 --model artifacts/demo_checkpoint
    # an int8 file already written by export/quantize.py, against its fp32 source:
    python export/check_accuracy.py --engine openvino --precision int8 --model artifacts/coreba-int8-openvino.xml \\
        --reference artifacts/coreba.onnx

Gate sets as in export/quantize.py: 'synthetic' (the demo checkpoint's 500-query gate split) and/or annotation
files of your features with --video-feature-dirs / --text-feature-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coreba.engines import ENGINE_NAMES, EngineUnavailable, load_engine  # noqa: E402
from coreba.predictor import config_for  # noqa: E402
from export.accuracy import GateSetTooSmall, accuracy_gate, require_gate_size  # noqa: E402
from export.datasets import SYNTHETIC, resolve_set  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", required=True, choices=ENGINE_NAMES)
    parser.add_argument("--precision", required=True, choices=("bf16", "int8"))
    parser.add_argument("--model", required=True, type=Path, help="what --engine loads (.onnx, .xml, a checkpoint dir)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="the fp32 model to compare with (default: --model itself at fp32; needed for int8)")
    parser.add_argument("--gate-set", nargs="+", default=[SYNTHETIC], help="'synthetic' and/or .jsonl files")
    parser.add_argument("--video-feature-dirs", nargs="+", type=Path, default=None)
    parser.add_argument("--text-feature-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.precision == "int8" and args.reference is None:
        parser.error("--precision int8 needs --reference (the fp32 model the int8 one was quantized from)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_for(args.model, args.engine)
        sets = [resolve_set(spec, "gate", config, args.video_feature_dirs, args.text_feature_dir)
                for spec in args.gate_set]
        for eval_set in sets:
            require_gate_size(eval_set)
        candidate = load_engine(args.engine, args.model, precision=args.precision)
        reference = load_engine(args.engine, args.reference or args.model, precision="fp32")
        reports = [accuracy_gate(reference, candidate, s, config, reference_name=f"{args.engine} fp32",
                                 candidate_name=f"{args.engine} {args.precision}") for s in sets]
    except (EngineUnavailable, GateSetTooSmall, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for report in reports:
        print(report.table())
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
