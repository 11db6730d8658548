"""int8 quantization and the accuracy gate, end to end on a small trained model: int8 models load as int8 and say
what stayed in fp32; the command applies the gate's verdict (writes inside it, exit 1 and the previous file
untouched outside it); a model made worse is refused; bf16 goes through the same gate or is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from coreba import Predictor
from coreba.config import CorebaConfig, TrainConfig
from coreba.data.synthetic import generate_synthetic_dataset
from coreba.model import Coreba
from coreba.training.data_sources import SyntheticSpec
from coreba.training.train import BEST_DIR, train
from export import quantize as quantize_cli
from export.accuracy import GATED_METRICS, MAX_DELTA, MIN_QUERIES, compare_metrics
from export.datasets import calibration_feeds, user_set
from export.onnx_export import export_onnx
from export.quantization import head_gemms, kept_in_fp32, quantize, weight_gemms

pytest.importorskip("onnxruntime.quantization")

DIMS = dict(slowfast_dim=24, clip_dim=16, text_dim=16)
DATA = dict(num_queries=160, signal_strength=6.0, topic_dim=4, seed=0, splits=("train", "val"))
EPOCHS = 12
# A toy model's HIT@1 hangs on near-tied clips of one window, so whether its int8 version lands inside 1 point
# depends on rounding details (VNNI or not, library versions): the verdict is the command's to make, and the test
# checks that it is applied. What the test does demand of int8 is that it is not broken: every metric within this.
SANITY_POINTS = 3.0
MODEL = dict(hidden_dim=32, num_heads=4, ffn_dim=64, num_balance_tokens=3, num_recurrent=1, num_saliency_layers=1,
             num_decoder_layers=2, input_dropout=0.1, max_video_len=75, max_text_len=32)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small COREBA trained briefly on synthetic data (so its rankings mean something), its ONNX export, and
    calibration and gate splits (500 queries) with the planted signal it learned, from another seed."""
    root = tmp_path_factory.mktemp("quantize")
    spec = SyntheticSpec(out_dir=str(root / "data"), **DIMS, **DATA)
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=EPOCHS, batch_size=8, lr=1e-3, eval_every=EPOCHS, seed=0, output_dir=str(root / "run"),
                      model=spec.model_config(CorebaConfig(**MODEL)))
    result = train(cfg, spec.data_paths(), progress=False)  # one evaluation, at the end: it saves best/
    print(f"small model: val MR R1@0.5 {result.last_metrics['MR-full-R1@0.5']:.1f} after {cfg.epochs} epochs")
    model = Coreba.from_pretrained(result.output_dir / BEST_DIR).eval()
    export_onnx(model, root / "small.onnx")
    held_out = generate_synthetic_dataset(root / "held_out", splits=("calibration", "gate"), num_queries=MIN_QUERIES,
                                          seed=11, signal_strength=DATA["signal_strength"], topic_dim=4, **DIMS,
                                          planted_like={k: DATA[k] for k in ("seed", "splits", "num_queries")})
    return {"root": root, "onnx": root / "small.onnx", "calibration": held_out.annotations["calibration"],
            "gate": held_out.annotations["gate"], "video_dirs": [str(d) for d in held_out.video_feature_dirs],
            "text_dir": str(held_out.text_feature_dir)}


def _argv(small, backend: str, output, gate=None, calibration_size: int = 32) -> list[str]:
    return ["--onnx", str(small["onnx"]), "--backend", backend, "--output", str(output),
            "--calibration", str(small["calibration"]), "--calibration-size", str(calibration_size),
            "--gate-set", str(gate or small["gate"]), "--video-feature-dirs", *small["video_dirs"],
            "--text-feature-dir", small["text_dir"]]


def test_the_heads_and_attention_products_are_kept_in_fp32(small):
    proto = onnx.load(str(small["onnx"]))
    producer = {out: n for n in proto.graph.node for out in n.output}
    heads = head_gemms(proto)
    weights = set(weight_gemms(proto))
    assert heads and set(heads) <= weights
    # the class head is the one matrix product reached from pred_logits before a LayerNorm
    logits_node = producer["pred_logits"]
    assert any(name in heads for name in [logits_node.name, *(producer[i].name for i in logits_node.input
                                                             if i in producer)])
    kept = kept_in_fp32(proto)
    attention = kept["attention (activation x activation) products"]
    assert attention and not set(attention) & weights
    assert len(heads) < 0.2 * len(weights)  # heads only, not the trunk


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_models_load_as_int8_and_say_what_was_kept(small, backend):
    if backend == "openvino":
        pytest.importorskip("nncf")
    cfg = Predictor.from_pretrained(small["onnx"], engine="onnxruntime").config
    calibration = user_set(small["calibration"], [Path(d) for d in small["video_dirs"]], Path(small["text_dir"]))
    output = small["root"] / f"direct-int8{quantize_cli.SUFFIX[backend]}"
    report = quantize(small["onnx"], backend, calibration_feeds(calibration, cfg, 16), output, "test",
                      small["root"])
    assert report.kept_fp32["final heads"] and report.quantized_gemms > 0
    predictor = Predictor.from_pretrained(output, engine=backend, precision="int8")
    assert predictor.config == cfg
    rng = np.random.default_rng(0)
    (result,) = predictor.predict([rng.standard_normal((40, cfg.video_dim), dtype=np.float32)],
                                  [rng.standard_normal((9, cfg.text_dim), dtype=np.float32)])
    assert len(result.saliency) == 40 and np.isfinite(result.saliency).all()
    with pytest.raises(ValueError, match="int8-quantized"):  # an int8 file is not passed off as fp32
        Predictor.from_pretrained(output, engine=backend, precision="fp32")
    with pytest.raises(ValueError, match="no int8 quantization"):
        Predictor.from_pretrained(small["onnx"], engine=backend, precision="int8")
    if backend == "onnxruntime":
        meta = {p.key: p.value for p in onnx.load(str(output), load_external_data=False).metadata_props}
    else:
        from coreba.engines.openvino_engine import read_ir_metadata

        meta = read_ir_metadata(output)
    assert meta["precision"] == "int8" and CorebaConfig.from_json(meta["config"]) == cfg
    assert json.loads(meta["quantization"])["kept_fp32"] == report.kept_fp32


def _gate_deltas(printed: str) -> dict[str, float]:
    """The delta column of the gate table the command printed."""
    deltas = {}
    for line in printed.splitlines():
        for label in GATED_METRICS:
            if line.startswith(label + " "):
                deltas[label] = float(line.split()[-2])
    return deltas


def test_quantize_command_applies_the_gate(small, capsys):
    output = small["root"] / "gated-int8.onnx"
    code = quantize_cli.main(_argv(small, "onnxruntime", output))
    printed = capsys.readouterr().out
    assert "kept in fp32: final heads" in printed
    deltas = _gate_deltas(printed)
    assert set(deltas) == set(GATED_METRICS), printed
    assert all(abs(d) <= SANITY_POINTS for d in deltas.values()), printed  # int8 is not broken
    inside = all(abs(d) <= MAX_DELTA for d in deltas.values())
    assert code == (0 if inside else 1), printed
    assert output.is_file() == inside and ("ACCEPTED" in printed) == inside
    assert not [p for p in output.parent.iterdir() if ".tmp" in p.name]


def test_a_model_outside_the_gate_is_refused_and_the_old_file_kept(small, monkeypatch, capsys):
    """The quantizer is made to flip the sign of the class head (kept fp32, so easy to find): MR collapses."""
    real = quantize_cli.quantize

    def broken(onnx_path, backend, feeds, output, calibration, work_dir):
        report = real(onnx_path, backend, feeds, output, calibration, work_dir)
        proto = onnx.load(str(output))
        class_head = next(n for n in proto.graph.node if n.name in report.kept_fp32["final heads"]
                          and "pred_logits" in _consumers_to_output(proto, n))
        weight = next(t for t in proto.graph.initializer if t.name == class_head.input[1])
        weight.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(weight), weight.name))
        onnx.save(proto, str(output))
        return report

    monkeypatch.setattr(quantize_cli, "quantize", broken)
    output = small["root"] / "refused.onnx"
    output.write_bytes(b"the previous good model")
    assert quantize_cli.main(_argv(small, "onnxruntime", output, calibration_size=8)) == 1
    captured = capsys.readouterr()
    assert "REFUSED" in captured.out and "REFUSED" in captured.err
    assert output.read_bytes() == b"the previous good model"
    assert not [p for p in output.parent.iterdir() if ".tmp" in p.name]


def _consumers_to_output(proto, node) -> set[str]:
    """Graph outputs reachable from ``node``."""
    consumers: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs, frontier, seen = {o.name for o in proto.graph.output}, list(node.output), set()
    reached = set()
    while frontier:
        tensor = frontier.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        if tensor in outputs:
            reached.add(tensor)
        for n in consumers.get(tensor, []):
            frontier.extend(n.output)
    return reached


def test_a_gate_set_under_500_queries_is_refused_before_quantizing(small, tmp_path, capsys):
    lines = small["gate"].read_text().splitlines()[:MIN_QUERIES - 1]
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(lines) + "\n")
    output = tmp_path / "never.onnx"
    assert quantize_cli.main(_argv(small, "onnxruntime", output, gate=short)) == 2
    assert f"needs at least {MIN_QUERIES}" in capsys.readouterr().err
    assert not output.exists()


def test_the_gate_is_one_point_either_way():
    reference = {key: 50.0 for key in GATED_METRICS.values()}
    inside = {**reference, "MR-full-R1@0.5": 51.0, "HL-min-VeryGood-mAP": 49.0}
    report = compare_metrics(reference, inside, candidate_name="int8", reference_name="fp32", eval_set="s",
                             num_queries=500)
    assert report.ok and report.deltas()["MR R1@0.5"] == 1.0
    for key in GATED_METRICS.values():
        for delta in (1.01, -1.01):
            outside = compare_metrics(reference, {**reference, key: 50.0 + delta}, candidate_name="int8",
                                      reference_name="fp32", eval_set="s", num_queries=500)
            assert not outside.ok and "REFUSED" in outside.table()
    with pytest.raises(ValueError, match="missing"):
        compare_metrics(reference, {}, candidate_name="a", reference_name="b", eval_set="s", num_queries=500)


def test_bf16_is_gated_too_or_refused_by_name(small, capsys, monkeypatch):
    """bf16 has no file to write: export/check_accuracy.py runs the same gate (OpenVINO bf16 vs fp32)."""
    pytest.importorskip("openvino")
    from coreba.engines.isa import CpuIsa, cpu_isa
    from export import check_accuracy

    argv = ["--engine", "openvino", "--precision", "bf16", "--model", str(small["onnx"]), "--gate-set",
            str(small["gate"]), "--video-feature-dirs", *small["video_dirs"], "--text-feature-dir", small["text_dir"]]
    if cpu_isa().bf16:
        assert check_accuracy.main(argv) == 0, capsys.readouterr()
        assert "openvino bf16" in capsys.readouterr().out
    import coreba.engines.openvino_engine as ov_engine

    monkeypatch.setattr(ov_engine, "cpu_isa", lambda: CpuIsa.from_flags(["avx2"], source="test"))
    assert check_accuracy.main(argv) == 2
    assert "bf16 needs a CPU with AVX512_BF16" in capsys.readouterr().err


def test_a_weight_behind_an_unfolded_transpose_is_still_a_weight():
    """The full-size export keeps large weights behind a Transpose it did not fold: such a MatMul is a weight GEMM
    (quantized), while a product of two activations is not."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["w"], ["w_t"], name="t"),
         helper.make_node("MatMul", ["x", "w_t"], ["y"], name="weight_product"),
         helper.make_node("MatMul", ["y", "z"], ["out"], name="activation_product")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
              helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 5])], initializer=[w])
    assert weight_gemms(helper.make_model(graph)) == ["weight_product"]
