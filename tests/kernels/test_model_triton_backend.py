"""The full model with the VT-block on the fused Triton kernel matches the math backend (fp32 <= 1e-4).

Runs compiled on CUDA, else through Triton's interpreter on the CPU (set in tests/conftest.py).
"""

import pytest
import torch

from coreba import Coreba
from kernels.balanced_attention import triton_available
from tests.conftest import random_batch, tiny_config

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.skipif(not triton_available(DEVICE), reason="needs triton with CUDA, or TRITON_INTERPRET=1 on the CPU")
@pytest.mark.parametrize("ablation", [{}, {"num_balance_tokens": 0}, {"share_vt_block": False, "num_recurrent": 3}])
def test_triton_backend_matches_math(ablation):
    cfg = tiny_config(**ablation)
    torch.manual_seed(0)
    model = Coreba(cfg).to(DEVICE).eval()
    batch = [x.to(DEVICE) for x in random_batch(cfg, [30, 7, 1], [12, 1, 5], seed=2)]
    with torch.no_grad():
        model.set_attention_backend("math")
        want = model(*batch)
        model.set_attention_backend("triton")
        assert model.config.attention_backend == "triton"
        got = model(*batch)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-4, rtol=0)
