"""The kernel compiled ahead of time for sm_80 and sm_90 without a GPU (``python -m kernels.aot``).

Every config the pruner can keep for the model's shapes must compile in fp32, fp16 and bf16 without a
spill. The compiler runs in a subprocess without ``TRITON_INTERPRET`` (this test process interprets
kernels); Triton's on-disk cache makes reruns take seconds (~35 s cold on 2 cores).
"""

from __future__ import annotations

import json

import pytest
import torch

from kernels import aot
from kernels import balanced_attention as ba

triton = pytest.importorskip("triton")


def _run(tmp_path, *argv: str) -> tuple[int, dict, str]:
    out = tmp_path / "aot.json"
    proc = aot.run_in_subprocess([*argv, "--json", str(out)])
    report = json.loads(out.read_text()) if out.is_file() else {}
    return proc.returncode, report, proc.stdout + proc.stderr


def _reachable_blocks(monkeypatch) -> set[tuple[int, int, int]]:
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the GPU config set (read by _configs at each call)
    reachable = aot.reachable_configs(aot.ModelShapes())
    return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps) for c, _ in reachable}


def test_every_reachable_config_compiles_for_sm80_sm90_without_spills(tmp_path, monkeypatch):
    code, report, log = _run(tmp_path, "--arch", "80,90")
    assert code == 0, log
    rows = report["reports"]
    expected = _reachable_blocks(monkeypatch)
    # Lt <= 32 rules out the 64-wide text blocks; everything else is reachable (Lq up to 1200)
    assert {(bm, bn) for bm, bn, _ in expected} == {(16, 16), (32, 16), (32, 32), (64, 16), (64, 32), (128, 32)}
    for arch in (80, 90):
        for dtype in ("fp32", "fp16", "bf16"):
            got = {(r["block_m"], r["block_n"], r["num_warps"])
                   for r in rows if r["arch"] == arch and r["dtype"] == dtype}
            assert got == expected, (arch, dtype)
    for r in rows:
        label = f"sm_{r['arch']} {r['dtype']} {r['block_m']}x{r['block_n']}"
        assert r["problems"] == [] and not r["error"], (label, r)
        assert 0 < r["registers"] <= 255 and r["ptxas_registers"] == r["registers"], (label, r)
        assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0 and r["stack_bytes"] == 0, (label, r)
        assert r["shared_bytes"] > 0, (label, r)
    assert "| sm_90 | bf16 |" in log  # the table is printed


def test_a_spill_is_caught(tmp_path):
    """Capping registers at 32 makes ptxas spill (the fp32 kernel needs 90-240): the tool must say so and fail."""
    code, report, log = _run(tmp_path, "--arch", "90", "--dtypes", "fp32", "--maxnreg", "32")
    assert code == 1, log
    assert report["reports"] and all(any("spills" in p for p in r["problems"]) for r in report["reports"])
    assert "NOT FIT: sm_90 fp32" in log


def test_report_problems():
    ok = aot.Report(90, "fp16", 64, 32, 4, 1, "Lq=1 Lt=1", registers=72, stack_bytes=0, local_bytes=0,
                    spill_store_bytes=0, spill_load_bytes=0, ptxas_registers=72, shared_bytes=8192)
    assert ok.problems() == [] and ok.threads == 128
    too_much_smem = aot.Report(**{**ok.__dict__, "arch": 80, "shared_bytes": 200 * 1024})
    assert "shared memory > sm_80's" in too_much_smem.problems()[0]
    mismatch = aot.Report(**{**ok.__dict__, "ptxas_registers": 80})
    assert "not those of Triton's binary" in mismatch.problems()[0]
    failed = aot.Report(**{**ok.__dict__, "error": "CompilationError: boom"})
    assert failed.problems() == ["compile failed: CompilationError: boom"]


def test_specialization_matches_tritons_own():
    """The launch arguments are specialised exactly as Triton's JIT does it (where Triton exposes that)."""
    try:
        from triton._C.libtriton import native_specialize_impl
        from triton.backends.compiler import BaseBackend
    except ImportError:
        pytest.skip(f"triton {triton.__version__} does not expose native_specialize_impl to compare with")
    args, _ = aot.model_layout_arguments(aot.ModelShapes(), torch.float16)
    values = [*args, 1, 0, 16, 48, 75, 2**33, torch.empty(3, dtype=torch.uint8)[1:]]
    for value in values:
        theirs = native_specialize_impl(BaseBackend, value, False, True, True)
        ours = aot.specialize(value)
        assert (ours[0], ours[1] or None) == (theirs[0], theirs[1] or None), (value if not torch.is_tensor(value)
                                                                           else value.shape, ours, theirs)


@pytest.mark.skipif(not ba.triton_available("cuda" if torch.cuda.is_available() else "cpu"),
                    reason="needs triton with CUDA, or TRITON_INTERPRET=1 on the CPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_compiled_arguments_are_those_of_the_models_vt_block(monkeypatch, dtype):
    """What is compiled must be what the model launches: the arguments the real VT-block attention passes
    (recorded instead of launched) get the same types and specialisation as ``model_layout_arguments``."""
    from coreba.model.attention import MultiHeadAttention

    recorded: list[tuple[list, dict]] = []

    class Recorder:
        def __getitem__(self, grid):
            return lambda *args, **meta: recorded.append((list(args), meta))

    monkeypatch.setattr(ba, "_kernel", lambda interpret: Recorder())
    shapes = aot.ModelShapes()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dim = shapes.heads * shapes.head_dim
    attn = MultiHeadAttention(dim, shapes.heads, backend="triton", num_always_valid=shapes.balance_tokens)
    attn = attn.to(device=device, dtype=dtype).eval()
    B, Lk = 2, shapes.tokens + shapes.balance_tokens
    video = torch.randn(B, shapes.clips, dim, device=device, dtype=dtype)
    text = torch.randn(B, Lk, dim, device=device, dtype=dtype)
    with torch.no_grad():
        attn(video, text, text, torch.ones(B, Lk, dtype=torch.bool, device=device))
    assert len(recorded) == 1
    got_args, got_meta = recorded[0]
    want_args, want_meta = aot.model_layout_arguments(shapes, dtype)
    assert got_meta == want_meta
    assert [aot.specialize(a) for a in got_args] == [aot.specialize(a) for a in want_args]
    assert [a for a in got_args if not torch.is_tensor(a)] == [a for a in want_args if not torch.is_tensor(a)]
