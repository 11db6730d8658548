"""Where the paper defers to QD-DETR (issue 11): decoder heads and detaching, initialisation, T2V residual,
and the architecture fingerprint that retires caches of weights trained by older model code.

Exact agreement with QD-DETR's own outputs and gradients is ``tests/test_convert.py``; these tests pin each
behaviour on its own, without the reference data.
"""

from __future__ import annotations

import math

import pytest
import torch

import coreba.model.coreba as coreba_module
from coreba import Coreba, CorebaConfig
from coreba.model.coreba import architecture_fingerprint
from coreba.model.layers import AttentionLayer
from tests.conftest import random_batch, tiny_config

# ------------------------------------------------------------------ fix 1: decoder heads


def test_refinement_reads_the_raw_output_and_prediction_the_normalised_one():
    cfg = tiny_config(num_decoder_layers=3)
    torch.manual_seed(0)
    model = Coreba(cfg).eval()
    seen: dict[str, list[torch.Tensor]] = {"layer": [], "refine": [], "span": [], "norm": []}
    decoder = model.decoder
    for layer in decoder.layers:
        layer.register_forward_hook(lambda m, i, o: seen["layer"].append(o))
    decoder.refine_head.register_forward_hook(lambda m, i, o: seen["refine"].append(i[0]))
    decoder.span_head.register_forward_hook(lambda m, i, o: seen["span"].append(i[0]))
    decoder.norm.register_forward_hook(lambda m, i, o: seen["norm"].append(o))
    with torch.no_grad():
        model(*random_batch(cfg, [30, 7], [12, 3]))
    assert len(seen["refine"]) == 2 and len(seen["span"]) == 3  # the last layer's refinement feeds nothing
    for raw, refine_input in zip(seen["layer"], seen["refine"]):
        assert refine_input is raw  # UN-normalised
    for normed, span_input in zip(seen["norm"], seen["span"]):
        assert span_input is normed
    assert not torch.allclose(seen["layer"][0], seen["norm"][0])


def _grads(model: Coreba, loss_of) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    out = model(*random_batch(model.config, [30, 7], [12, 3]))
    loss_of(out).backward()
    return {name: p.grad for name, p in model.decoder.named_parameters()}


def _nonzero(grad: torch.Tensor | None) -> bool:
    return grad is not None and bool(grad.abs().sum() > 0)


def test_prediction_reference_is_not_detached_but_the_next_anchor_is():
    cfg = tiny_config(dropout=0.0, input_dropout=0.0)
    torch.manual_seed(0)
    model = Coreba(cfg).train()
    # the last layer's spans add logit(reference), which the refinement produced: its gradient reaches refine_head
    spans = _grads(model, lambda out: out["pred_spans"].sum())
    assert _nonzero(spans["refine_head.layers.2.weight"])
    # the last layer's logits see the refinement only through the next layer's anchor, which is detached
    logits = _grads(model, lambda out: out["pred_logits"].sum())
    assert not _nonzero(logits["refine_head.layers.2.weight"])
    # the first layer's reference is sigmoid(anchors), not detached: its spans' gradient reaches the anchors
    first = _grads(model, lambda out: out["aux_outputs"][0]["pred_spans"].sum())
    assert _nonzero(first["anchors.weight"])


# ------------------------------------------------------------------ fix 2: initialisation


def _xavier_bound(w: torch.Tensor, packed: bool) -> float:
    fan_out, fan_in = w.shape
    return math.sqrt(6.0 / (fan_in + (3 * fan_out if packed else fan_out)))


@pytest.fixture(scope="module")
def full_model() -> Coreba:
    torch.manual_seed(0)
    return Coreba(CorebaConfig())


def test_every_transformer_matrix_is_xavier(full_model):
    """QD-DETR's Transformer re-draws every matrix with xavier_uniform_ (q/k/v over their packed (3D, D) shape, as
    nn.MultiheadAttention holds them); PyTorch's default bound, 1/sqrt(fan_in), gives a clearly smaller spread."""
    skip = {"decoder.anchors.weight", "decoder.class_head.weight"}
    checked = 0
    for name, w in full_model.named_parameters():
        if w.dim() < 2 or name in skip or not name.startswith(("encoder.", "saliency.layers.", "decoder.")):
            continue
        if name.startswith("decoder.span_head."):
            continue
        packed = name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight"))
        bound = _xavier_bound(w, packed)
        assert w.abs().max() <= bound + 1e-7, name
        if w.numel() >= 4096:
            std = w.std().item()
            assert abs(std - bound / math.sqrt(3)) < 0.03 * bound / math.sqrt(3), (name, std, bound)
            default_std = 1 / math.sqrt(w.shape[1]) / math.sqrt(3)
            assert abs(std - default_std) > 0.05 * default_std, f"{name} looks like PyTorch's default init"
        checked += 1
    assert checked == 3 * 6 + 2 * 6 + 15 + 14 + 9  # CFC blocks, saliency layers, decoder layers 0 and 1, heads


def test_biases_heads_and_saliency_token_start_as_qd_detr(full_model):
    for module in full_model.modules():
        if isinstance(module, AttentionLayer):
            for proj in (module.attn.q_proj, module.attn.k_proj, module.attn.v_proj, module.attn.out_proj):
                assert torch.count_nonzero(proj.bias) == 0  # nn.MultiheadAttention zeroes its biases
    decoder = full_model.decoder
    for layer in decoder.layers:
        assert torch.count_nonzero(layer.self_attn.out_proj.bias) == 0
        assert torch.count_nonzero(layer.cross_attn.out_proj.bias) == 0
    refine_last = decoder.refine_head.layers[-1]
    assert torch.count_nonzero(refine_last.bias) == 0  # DAB-DETR's zero bias survives QD-DETR's xavier pass
    assert refine_last.weight.abs().max() <= _xavier_bound(refine_last.weight, False)
    assert refine_last.weight.std() > 0.05  # ... while its weight is xavier, not zero
    span_last = decoder.span_head.layers[-1]  # QD-DETR's span_embed keeps PyTorch's default init, not zero
    assert span_last.weight.std() > 0.01 and span_last.weight.abs().max() <= 1 / math.sqrt(span_last.in_features)
    for token in (full_model.saliency.token, full_model.saliency.token_pos):
        assert 0.8 < token.std().item() < 1.2  # torch.randn, std 1 (was 0.02)


# ------------------------------------------------------------------ QD-DETR's T2V residual


def test_qd_detr_t2v_layer_adds_the_ffn_to_the_unnormalised_sum():
    torch.manual_seed(0)
    layer = AttentionLayer(16, 4, 32, 0.0, "prelu", t2v_residual=True).eval()
    x, key = torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with torch.no_grad():
        h = x + layer.attn(x, key, key, mask)
        want = layer.norm2(h + layer.ffn(layer.norm1(h)))
        torch.testing.assert_close(layer(x, key, mask), want, atol=1e-6, rtol=0)
        standard = layer.norm2(layer.norm1(h) + layer.ffn(layer.norm1(h)))
        assert (layer(x, key, mask) - standard).abs().max() > 1e-3
    qd = Coreba(tiny_config(encoder_type="qd_detr", num_qd_layers=2))
    assert all(block.t2v_residual for block in qd.encoder.vt_blocks())
    cfc = Coreba(tiny_config())
    assert not any(m.t2v_residual for m in cfc.modules() if isinstance(m, AttentionLayer))


# ------------------------------------------------------------------ cache invalidation


def test_architecture_fingerprint_follows_parameters_and_model_revision(monkeypatch):
    import coreba.pretrained as pretrained

    cfg = CorebaConfig()
    first = architecture_fingerprint(cfg)
    assert architecture_fingerprint(CorebaConfig()) == first
    assert architecture_fingerprint(cfg.replace(num_queries=11)) != first
    assert architecture_fingerprint(cfg.replace(attention_backend="math")) == first
    assert pretrained.demo_parameters()["architecture"] == first
    monkeypatch.setattr(coreba_module, "MODEL_REVISION", coreba_module.MODEL_REVISION + 1)
    assert architecture_fingerprint(cfg) != first  # the demo checkpoint's marker no longer matches: retrain
    assert pretrained.demo_parameters()["architecture"] != first
