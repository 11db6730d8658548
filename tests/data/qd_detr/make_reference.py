"""Make the QD-DETR reference data of this folder by running the OFFICIAL QD-DETR code (run once, by hand).

    python tests/data/qd_detr/make_reference.py --qd-detr /path/to/a/QD-DETR/checkout [--out tests/data/qd_detr]

For each variant below it builds QD-DETR's model with QD-DETR's own option parser and ``build_model`` (imported
from the checkout given on the command line; nothing of QD-DETR is copied here), gives it random weights, runs it
in eval mode on fixed random inputs, and writes

* ``<variant>.ckpt``: ``torch.save`` of the dict QD-DETR's ``train.py`` saves (``model``, ``optimizer``,
  ``lr_scheduler``, ``epoch``, ``opt``: the parsed ``argparse.Namespace``);
* ``<variant>_outputs.npz``: per input case (``<case>.<name>``), the inputs and every output of QD-DETR's forward
  (final and auxiliary layers, saliency, negative-pair saliency), and the gradients of a fixed objective,
  ``sum_l sum(pred_spans_l * objective_w<l>)`` over every decoder layer, for the parameters that show how the
  decoder's anchors are refined and detached (``grad.<QD-DETR parameter name>``).

How the official code is made to run here, with no edit to its files:

* ``torch.Tensor.cuda`` is replaced by the identity while generating (QD-DETR's transformer calls ``.cuda()``).
* ``pandas`` is stubbed when absent: ``utils/basic_utils.py`` imports it; nothing used here needs it.

Small files: QD-DETR's anchor sine embedding has 256 features, so ``hidden_dim`` must be 256 and the weight
matrices are large. To keep each checkpoint near 100 KB, every parameter with more than 32 values is a strided
VIEW into one shared random pool (matrices: row i starts ``stride * i`` further into the pool, ``stride`` in 5..13;
each parameter at its own offset): ``torch.save`` stores a shared storage once. The values are still random,
every matrix differs from every other and from its transpose, so a wrong mapping cannot pass unnoticed.
LayerNorm weights come from a pool around 1; parameters of 32 values or fewer are their own N(0, 0.5^2) tensors.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

POOL_SIZE = 16384
NORM_POOL_SIZE = 1024
ROW_STRIDES = (5, 7, 11, 13)
SMALL = 32
SEED = 20240611

COMMON = ["--dset_name", "hl", "--exp_id", "coreba_reference", "--device", "-1",
          "--train_path", "data/highlight_train_release.jsonl", "--eval_path", "data/highlight_val_release.jsonl",
          "--v_feat_dirs", "features/slowfast_features", "features/clip_features",
          "--t_feat_dir", "features/clip_text_features", "--v_feat_dim", "6", "--t_feat_dim", "6",
          "--hidden_dim", "256", "--dim_feedforward", "64"]
VARIANTS = {
    # QD-DETR's defaults (enc_layers 2, dec_layers 2, 8 heads, 10 queries, n_input_proj 2, no text positions)
    # with small feature and FFN dims.
    "qd_detr_default": [],
    # Every other option this project converts: text positions, 3 input blocks, 1 encoder layer, 3 decoder
    # layers, the (training-only) contrastive alignment heads.
    "qd_detr_variant": ["--use_txt_pos", "--n_input_proj", "3", "--enc_layers", "1", "--dec_layers", "3",
                        "--nheads", "4", "--num_queries", "4", "--contrastive_align_loss", "--max_q_l", "8",
                        "--max_v_l", "16"],
}
# (video lengths, text lengths, padded video length, padded text length): B = 1 with padding, and a batch whose
# videos share one length (QD-DETR's T2V mask is repeated head-major, which only acts on padded video clips).
CASES = {
    "b1": ([9], [5], 12, 7),
    "batch": ([10, 10, 10], [6, 3, 5], 10, 6),
}


def import_qd_detr(root: Path):
    if not (root / "qd_detr" / "model.py").is_file():
        raise SystemExit(f"{root} is not a QD-DETR checkout (no qd_detr/model.py)")
    sys.path.insert(0, str(root))
    try:
        import pandas  # noqa: F401
    except ImportError:
        stub = types.ModuleType("pandas")
        stub.__spec__ = importlib.machinery.ModuleSpec("pandas", None)  # torch inspects module specs
        sys.modules["pandas"] = stub
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # the official transformer calls .cuda()
    from qd_detr.config import BaseOptions
    from qd_detr.model import build_model

    return BaseOptions, build_model


def parse_opt(BaseOptions, argv: list[str]) -> argparse.Namespace:
    """QD-DETR's parser, then the attributes its ``BaseOptions.parse`` and ``train`` add (without their side
    effects: no results folder, no code zip)."""
    options = BaseOptions()
    options.initialize()
    opt = options.parser.parse_args(argv)
    opt.results_dir = f"results/hl-{opt.ctx_mode}-{opt.exp_id}-2024_06_11_00_00_00"
    opt.ckpt_filepath = f"{opt.results_dir}/model.ckpt"
    opt.train_log_filepath = f"{opt.results_dir}/train.log.txt"
    opt.eval_log_filepath = f"{opt.results_dir}/eval.log.txt"
    opt.tensorboard_log_dir = f"{opt.results_dir}/tensorboard_log"
    opt.device = torch.device("cuda" if opt.device >= 0 else "cpu")
    opt.pin_memory = not opt.no_pin_memory
    opt.use_tef = "tef" in opt.ctx_mode
    opt.use_video = "video" in opt.ctx_mode
    if opt.use_tef:
        opt.v_feat_dim += 2
    opt.train_log_txt_formatter = "{time_str} [Epoch] {epoch:03d} [Loss] {loss_str}\n"
    opt.eval_log_txt_formatter = "{time_str} [Epoch] {epoch:03d} [Loss] {loss_str} [Metrics] {eval_metrics_str}\n"
    return opt


def fill_parameters(model: nn.Module, seed: int) -> None:
    """Random values as strided views into shared pools (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.empty(POOL_SIZE).uniform_(-0.1, 0.1, generator=g)
    norm_pool = torch.empty(NORM_POOL_SIZE).uniform_(0.8, 1.2, generator=g)
    norm_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.LayerNorm)}
    with torch.no_grad():
        for k, (_, p) in enumerate(model.named_parameters()):
            if p.numel() <= SMALL:
                p.data = torch.randn(p.shape, generator=g) * 0.5
                continue
            source = norm_pool if id(p) in norm_weights else pool
            if p.dim() == 2:
                stride = ROW_STRIDES[k % len(ROW_STRIDES)]
                extent, strides = (p.shape[0] - 1) * stride + p.shape[1], (stride, 1)
            else:
                extent, strides = p.numel(), (1,)
            offset = (k * 7919) % (source.numel() - extent + 1)
            p.data = source.as_strided(p.shape, strides, offset)


def make_inputs(video_lens, text_lens, Lv, Lt, opt, rng: np.random.Generator) -> dict[str, np.ndarray]:
    B = len(video_lens)
    video = rng.standard_normal((B, Lv, opt.v_feat_dim)).astype(np.float32)
    text = rng.standard_normal((B, Lt, opt.t_feat_dim)).astype(np.float32)
    video_mask = np.arange(Lv)[None] < np.array(video_lens)[:, None]
    text_mask = np.arange(Lt)[None] < np.array(text_lens)[:, None]
    video[~video_mask], text[~text_mask] = 0.0, 0.0  # zero padding, as QD-DETR's collate pads
    return {"video_feats": video, "video_mask": video_mask, "text_feats": text, "text_mask": text_mask}


GRAD_PARAMETERS = ("query_embed.weight", "transformer.decoder.bbox_embed.layers.2.weight", "span_embed.layers.2.weight")


def run_official(model: nn.Module, inputs: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    model.zero_grad(set_to_none=True)
    out = model(src_txt=torch.from_numpy(inputs["text_feats"]),
                src_txt_mask=torch.from_numpy(inputs["text_mask"]).float(),
                src_vid=torch.from_numpy(inputs["video_feats"]),
                src_vid_mask=torch.from_numpy(inputs["video_mask"]).float())
    arrays = {name: out[name].detach().numpy() for name in ("pred_logits", "pred_spans", "saliency_scores",
                                                            "saliency_scores_neg")}
    layers = [*out["aux_outputs"], out]
    for i, aux in enumerate(out["aux_outputs"]):
        arrays[f"aux{i}_pred_logits"] = aux["pred_logits"].detach().numpy()
        arrays[f"aux{i}_pred_spans"] = aux["pred_spans"].detach().numpy()
    objective = 0.0
    for i, layer in enumerate(layers):
        weights = rng.standard_normal(layer["pred_spans"].shape).astype(np.float32)
        arrays[f"objective_w{i}"] = weights
        objective = objective + (layer["pred_spans"] * torch.from_numpy(weights)).sum()
    objective.backward()
    params = dict(model.named_parameters())
    for name in GRAD_PARAMETERS:
        arrays[f"grad.{name}"] = params[name].grad.numpy()
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qd-detr", required=True, type=Path, help="a checkout of github.com/wjun0830/QD-DETR")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    BaseOptions, build_model = import_qd_detr(args.qd_detr.resolve())
    for v, (name, extra) in enumerate(VARIANTS.items()):
        opt = parse_opt(BaseOptions, COMMON + extra)
        torch.manual_seed(SEED + v)
        model, _ = build_model(opt)
        fill_parameters(model, SEED + v)
        model.eval()
        optimizer = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.requires_grad]}],
                                      lr=opt.lr, weight_decay=opt.wd)
        lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, opt.lr_drop)
        checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "lr_scheduler": lr_scheduler.state_dict(), "epoch": 0, "opt": opt}
        torch.save(checkpoint, args.out / f"{name}.ckpt")
        rng = np.random.default_rng(SEED + v)
        arrays = {}
        for case, spec in CASES.items():
            inputs = make_inputs(*spec, opt, rng)
            for key, value in {**inputs, **run_official(model, inputs, rng)}.items():
                arrays[f"{case}.{key}"] = value
        np.savez(args.out / f"{name}_outputs.npz", **arrays)
        size = (args.out / f"{name}.ckpt").stat().st_size
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, checkpoint {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
