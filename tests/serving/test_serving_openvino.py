"""The served Python model on another engine, chosen in its config parameters only: a real Triton server on
127.0.0.1 running ``coreba`` (the end-to-end graph) on OpenVINO fp32 answers like eager PyTorch + the same
post-processing, and on an int8 model of that graph as the int8 engine does in-process."""

from __future__ import annotations

import pytest

from serving.client import CorebaClient
from serving.launcher import TritonServer

pytestmark = pytest.mark.server
pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def openvino_repository(served_model, tmp_path_factory):
    from serving.build_repository import build_repository

    output = tmp_path_factory.mktemp("repo_openvino") / "model_repository"
    build_repository(served_model.onnx_path, output, python_engine="openvino", precision="fp32")
    return output


def test_openvino_served_answers_match_eager(openvino_repository, make_query, reference, same_answer):
    with TritonServer(openvino_repository, startup_timeout_s=120) as server, \
            CorebaClient(server.grpc_url, "grpc") as client:
        for seed, (clips, tokens) in enumerate([(30, 12), (1, 1), (17, 5)]):
            query = make_query(clips, tokens, seed)
            same_answer(client.query(query.video, query.text, query.duration), reference(query))


def test_an_int8_end_to_end_model_is_served_as_the_engine_runs_it(served_model, make_query, tmp_path_factory):
    """An int8 OpenVINO model OF THE END-TO-END GRAPH (export.quantization on random calibration queries: the tiny
    model is random, so no accuracy gate here; tests/export/test_quantize.py gates the command) is served through
    config parameters only, and the server answers as the same int8 engine does in-process."""
    import numpy as np

    from coreba.answer import unpack_answer
    from coreba.engines import load_engine
    from export.quantization import quantize
    from serving.build_repository import build_repository

    queries = [make_query(clips, tokens, seed) for seed, (clips, tokens) in enumerate([(30, 12), (9, 3), (22, 7)])]
    feeds = [{"video_feats": q.video[None], "video_mask": np.ones((1, len(q.video)), dtype=bool),
              "text_feats": q.text[None], "text_mask": np.ones((1, len(q.text)), dtype=bool),
              "duration": np.array([q.duration], dtype=np.float32)} for q in queries * 3]
    work = tmp_path_factory.mktemp("int8_e2e")
    ir = work / "coreba-e2e-int8-openvino.xml"
    report = quantize(served_model.onnx_path, "openvino", feeds, ir, "random", work)
    assert report.quantized_gemms > 0
    output = work / "model_repository"
    build_repository(served_model.onnx_path, output, python_engine="openvino", precision="int8", python_model=ir)
    engine = load_engine("openvino", ir, precision="int8")
    with TritonServer(output, startup_timeout_s=120) as server, CorebaClient(server.grpc_url, "grpc") as client:
        for query, feed in zip(queries, feeds, strict=False):
            want = unpack_answer(engine.run(feed))[0]
            got = client.query(query.video, query.text, query.duration)
            assert len(got.saliency) == len(query.video)
            # the server pads to the config's maxima; padding changes nothing (exact masking), up to int8 rounding
            np.testing.assert_allclose(np.asarray(got.moments), np.asarray(want.moments), atol=1e-3)
            np.testing.assert_allclose(np.asarray(got.saliency), np.asarray(want.saliency), atol=1e-3)
