"""The served Python model on another engine, chosen in its config parameters only: a real Triton server on
127.0.0.1 running ``coreba_python`` on OpenVINO fp32 answers like eager PyTorch + the same post-processing."""

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
