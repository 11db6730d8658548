"""The end-to-end graph (the model with the post-processing inside): its I/O, metadata and TensorRT op check;
its answer equals eager PyTorch + ``coreba.postprocess.postprocess`` at the harness's cases, in the same order
(exact ties included: ONNX TopK and numpy's stable argsort both put the lower index first); the harness fails
a wrong answer; fp16 and the optimizers through the CLI."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import onnx
import pytest
import torch

from coreba import Coreba
from coreba.answer import pack_answer
from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine
from coreba.onnx_io import read_metadata
from coreba.postprocess import postprocess
from export import to_onnx
from export.answer_graph import AnswerGraph
from export.spec import ANSWER_NAMES, END_TO_END_INPUT_NAMES
from export.tensorrt_ops import analyze_tensorrt_compatibility
from export.validate import (
    ParityError,
    answer_feeds,
    check_answer_parity,
    parity_cases,
    reference_answer,
)
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def e2e(tiny_end_to_end):
    model, result = tiny_end_to_end
    return model, result, OnnxRuntimeEngine(result.path)


def test_graph_io_metadata_and_parity(e2e):
    model, result, _ = e2e
    proto = onnx.load(str(result.path))
    assert [i.name for i in proto.graph.input] == list(END_TO_END_INPUT_NAMES)
    assert [o.name for o in proto.graph.output] == list(ANSWER_NAMES)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(proto.graph.input) + list(proto.graph.output)}
    assert dims["duration"] == ["batch"] and dims["moments"] == ["batch", 10, 3]
    assert dims["saliency"] == ["batch", "num_clips"] and dims["num_clips"] == ["batch", 1]
    types = {v.name: v.type.tensor_type.elem_type for v in proto.graph.output}
    assert types["num_clips"] == onnx.TensorProto.INT32 and types["moments"] == onnx.TensorProto.FLOAT
    meta = read_metadata(result.path)
    assert (meta["graph"], meta["top_k"]) == ("end_to_end", "10")
    # 5 cases x (times, scores, saliency, num_clips), every one within the bounds
    assert result.parity.ok and len(result.parity.rows) == 20
    worst = result.parity.worst()
    assert worst["moment times (s)"] <= 1e-4 and worst["moment scores"] <= 1e-5 and worst["num_clips"] == 0
    assert {"TopK", "Softmax"} <= set(result.op_counts)


def test_predictor_refuses_the_end_to_end_graph(e2e):
    from coreba import Predictor

    _, result, _ = e2e
    with pytest.raises(ValueError, match="end-to-end graph .* without --end-to-end"):
        Predictor.from_pretrained(result.path, engine="onnxruntime")


def test_graph_passes_the_tensorrt_op_check(e2e):
    _, result, _ = e2e
    report = analyze_tensorrt_compatibility(result.path)
    assert report.problems == [], report.summary()


def test_order_is_the_reference_order_where_scores_differ(e2e):
    """Position by position, no re-matching: for every query whose reference scores are at least 1e-6 apart (the
    graph's scores are within ~2e-7 of them; untrained scores of a 1-clip video agree to ~1e-7 and are left out),
    the moments come out in the reference's order."""
    model, _, engine = e2e
    checked = 0
    for i, case in enumerate(parity_cases(model.config)):
        feeds = answer_feeds(model.config, case, seed=i)
        want, got = reference_answer(model, feeds, top_k=10), engine.run(feeds)
        for b in range(len(case.video_lens)):
            if (-np.diff(want["moments"][b, :, 2]) < 1e-6).any():
                continue
            np.testing.assert_allclose(got["moments"][b], want["moments"][b], atol=1e-4, rtol=0)
            checked += 1
    assert checked >= 10, f"only {checked} queries without near-equal scores"


def _export_head(top_k: int, B: int, Q: int, Lv: int, path) -> OnnxRuntimeEngine:
    """The post-processing alone as an ONNX graph, so that exact ties can be fed to it."""
    args = (torch.zeros(B, Q, 2), torch.zeros(B, Q, 2), torch.zeros(B, Lv), torch.ones(B, Lv, dtype=torch.bool),
            torch.ones(B))
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(AnswerGraph(top_k), args, dynamo=True, external_data=False, opset_version=18,
                                    input_names=["pred_logits", "pred_spans", "saliency_scores", "video_mask",
                                                 "duration"], output_names=list(ANSWER_NAMES), verbose=False)
    onnx.save(program.model_proto, str(path))
    return OnnxRuntimeEngine(path)


def test_exact_ties_keep_numpys_order_and_holes_are_packed(tmp_path):
    """Queries with bit-equal logits: ONNX Runtime's TopK returns them lower index first, as numpy's stable
    argsort; a video mask with holes gives its valid clips packed to the front, in clip order."""
    B, Q, Lv, K = 3, 10, 7, 6
    engine = _export_head(K, B, Q, Lv, tmp_path / "head.onnx")
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((B, Q, 2)).astype(np.float32)
    logits[0, :] = logits[0, 3]  # every score equal
    logits[1, [1, 4, 8]] = logits[1, 6]  # a tie inside the ranking
    logits[2, [0, 9]] = np.array([5.0, -5.0], np.float32)  # a tie at the top
    spans = rng.uniform(0.05, 0.95, (B, Q, 2)).astype(np.float32)
    saliency = rng.standard_normal((B, Lv)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1, 0], [0, 0, 1, 0, 0, 0, 0]], bool)
    duration = np.array([14.0, 9.5, 3.25], np.float32)
    got = engine.session.run(None, {"pred_logits": logits, "pred_spans": spans, "saliency_scores": saliency,
                                    "video_mask": mask, "duration": duration})
    want = pack_answer(postprocess(logits, spans, saliency, mask, duration, top_k=K), K, Lv)
    np.testing.assert_allclose(got[0], want["moments"], atol=2e-6, rtol=0)  # in order, no re-matching
    np.testing.assert_array_equal(got[1], want["saliency"])  # exact
    np.testing.assert_array_equal(got[2], want["num_clips"])


def test_harness_fails_a_wrong_answer(e2e):
    model, _, engine = e2e
    case = parity_cases(model.config)[2]  # padded batch of 4

    def wrong(change):
        def run(feeds):
            out = {k: v.copy() for k, v in engine.run(feeds).items()}
            change(out)
            return out
        return run

    def swap_first_two(out):  # the best two moments in the wrong order (their scores differ)
        out["moments"][:, [0, 1]] = out["moments"][:, [1, 0]]

    def shift_saliency(out):
        out["saliency"][:, 0] += 1e-3

    def miscount(out):
        out["num_clips"][1] += 1

    for change, output in ((swap_first_two, "moment"), (shift_saliency, "saliency"), (miscount, "num_clips")):
        with pytest.raises(ParityError, match=output):
            check_answer_parity(wrong(change), model, "wrong", top_k=10, cases=[case])


def test_cli_end_to_end_fp16_and_optimizers(tmp_path, capsys):
    torch.manual_seed(1)
    Coreba(tiny_config()).eval().save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "e2e16.onnx"
    assert to_onnx.main(["--checkpoint", str(tmp_path / "ckpt"), "--output", str(out), "--end-to-end", "--fp16",
                         "--top-k", "4", "--optimize", "ort", "onnxslim"]) == 0
    printed = capsys.readouterr().out
    assert "ONNX Runtime CPU fp16 end-to-end" in printed and "times / duration" in printed
    assert "(ort-optimized) end-to-end" in printed and "(onnxslim-optimized) end-to-end" in printed
    meta = read_metadata(out)
    assert (meta["graph"], meta["top_k"], meta["precision"]) == ("end_to_end", "4", "fp16")
    assert to_onnx.default_output(fp16=True, end_to_end=True).name == "coreba-e2e-fp16.onnx"
