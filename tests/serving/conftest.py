"""Fixtures of the serving tests: one tiny exported model per session, its repository, and the reference
answer (eager PyTorch + the ONE post-processing) that every served answer is compared with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from coreba import Coreba, CorebaConfig
from coreba.postprocess import QueryResult, postprocess
from export.validate import eager_outputs

TOLERANCE = 1e-4  # served vs eager, on every moment value and saliency


@dataclass
class ServedModel:
    model: Coreba
    config: CorebaConfig
    onnx_path: Path


@dataclass
class Query:
    video: np.ndarray  # (L_v, D_v) float32, unpadded
    text: np.ndarray  # (L_t, D_t) float32, unpadded
    duration: float


@pytest.fixture(scope="session")
def served_model(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    """The brief's tiny config, exported once (export_onnx checks its own parity with ONNX Runtime)."""
    import export.onnx_export as onnx_export

    cfg = CorebaConfig(video_dim=40, text_dim=24, hidden_dim=32, num_heads=4, ffn_dim=64, num_balance_tokens=3,
                       num_recurrent=2, max_video_len=30, max_text_len=12)
    torch.manual_seed(0)
    model = Coreba(cfg).eval()
    path = tmp_path_factory.mktemp("onnx") / "coreba.onnx"
    onnx_export.export_onnx(model, path)
    return ServedModel(model, cfg, path)


@pytest.fixture(scope="session")
def repository(served_model: ServedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from serving.build_repository import build_repository

    output = tmp_path_factory.mktemp("repo") / "model_repository"
    build_repository(served_model.onnx_path, output)
    return output


@pytest.fixture(scope="session")
def make_query(served_model: ServedModel) -> Callable[[int, int, int], Query]:
    """``make_query(num_clips, num_tokens, seed)``: random features and a duration close to 2 s per clip."""
    cfg = served_model.config

    def make(num_clips: int, num_tokens: int, seed: int) -> Query:
        rng = np.random.default_rng(seed)
        return Query(rng.standard_normal((num_clips, cfg.video_dim), dtype=np.float32),
                     rng.standard_normal((num_tokens, cfg.text_dim), dtype=np.float32),
                     float(np.float32(num_clips * cfg.clip_length - rng.uniform(0, 1))))

    return make


@pytest.fixture(scope="session")
def reference(served_model: ServedModel) -> Callable[[Query], QueryResult]:
    """Eager PyTorch on the UNPADDED query, then :func:`coreba.postprocess.postprocess`."""

    def answer(query: Query) -> QueryResult:
        feeds = {"video_feats": query.video[None], "video_mask": np.ones((1, len(query.video)), dtype=bool),
                 "text_feats": query.text[None], "text_mask": np.ones((1, len(query.text)), dtype=bool)}
        out = eager_outputs(served_model.model, feeds)
        return postprocess(out["pred_logits"], out["pred_spans"], out["saliency_scores"], feeds["video_mask"],
                           durations=[query.duration])[0]

    return answer


def assert_same_answer(got: QueryResult, want: QueryResult, tol: float = TOLERANCE) -> None:
    """The same moments and saliency within ``tol``. Moments are compared as a set matched one to one, plus the
    sorted scores in order: windows whose scores tie to ~1e-7 (a 1-clip video) may legitimately swap places
    between engines, since fp32 rounding decides their order."""
    assert len(got.saliency) == len(want.saliency), (len(got.saliency), len(want.saliency))
    np.testing.assert_allclose(np.asarray(got.saliency), np.asarray(want.saliency), atol=tol, rtol=0)
    got_m, want_m = np.asarray(got.moments), np.asarray(want.moments)
    assert got_m.shape == want_m.shape, (got_m.shape, want_m.shape)
    np.testing.assert_allclose(got_m[:, 2], want_m[:, 2], atol=tol, rtol=0)
    unused = list(range(len(want_m)))
    for row in got_m:
        match = next((j for j in unused if np.abs(want_m[j] - row).max() <= tol), None)
        assert match is not None, f"served moment {row.tolist()} is not among the reference's {want_m.tolist()}"
        unused.remove(match)


@pytest.fixture(scope="session")
def same_answer() -> Callable[[QueryResult, QueryResult], None]:
    return assert_same_answer
