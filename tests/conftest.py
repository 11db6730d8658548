"""Fixtures shared across test folders: small model configs and random padded batches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without CUDA, Triton kernels run through Triton's interpreter; the flag must be set before triton is first
# imported (by any test module), so it is set here, once, for the whole session.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from coreba import CorebaConfig

SHARED_DIR = Path(os.environ.get("COREBA_SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))


def tiny_config(**overrides) -> CorebaConfig:
    """A fast config with the full architecture (every block present) at small widths."""
    base = dict(video_dim=40, text_dim=24, hidden_dim=32, num_heads=4, ffn_dim=64, num_balance_tokens=3,
                num_recurrent=2, max_video_len=30, max_text_len=12)
    base.update(overrides)
    return CorebaConfig(**base)


def random_batch(cfg: CorebaConfig, video_lens: list[int], text_lens: list[int], seed: int = 0,
                 dtype: torch.dtype = torch.float32):
    """A padded batch of random (never all-zero) features with masks; padding filled with noise too."""
    g = torch.Generator().manual_seed(seed)
    B, Lv, Lt = len(video_lens), max(video_lens), max(text_lens)
    video = torch.randn(B, Lv, cfg.video_dim, generator=g).to(dtype)
    text = torch.randn(B, Lt, cfg.text_dim, generator=g).to(dtype)
    video_mask = torch.arange(Lv)[None] < torch.tensor(video_lens)[:, None]
    text_mask = torch.arange(Lt)[None] < torch.tensor(text_lens)[:, None]
    return video, video_mask, text, text_mask


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DIR} (set COREBA_SHARED_DIR)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def tiny_end_to_end(tmp_path_factory):
    """A tiny model and its end-to-end graph (post-processing inside), exported once per session by the real
    exporter (which checks its answer against eager PyTorch + postprocess)."""
    from coreba import Coreba
    from export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = Coreba(tiny_config()).eval()
    return model, export_onnx(model, tmp_path_factory.mktemp("e2e") / "coreba-e2e.onnx", end_to_end=True)
