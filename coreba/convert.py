"""Bring your own QD-DETR checkpoint: convert one trained with QD-DETR's code into this project's format.

    python -m coreba.convert qd-detr --checkpoint results/.../model_best.ckpt --output artifacts/qd_detr

writes a ``save_pretrained`` directory (``config.json`` + ``model.safetensors``, plus ``conversion.json`` saying
where it came from) that every tool here takes: ``Predictor``, ``coreba.predict``, ``export/to_onnx.py``,
TensorRT, serving, benchmarks. In Python: ``from_qd_detr(path) -> Coreba``.

QD-DETR (github.com/wjun0830/QD-DETR) saves ``torch.save({"model": state_dict, "optimizer", "lr_scheduler",
"epoch", "opt": argparse.Namespace})``. Reading it:

* ``torch.load(weights_only=True)``, with only ``argparse.Namespace`` allowed beyond tensors and plain
  containers: no code in the file runs. Anything else the pickle asks for is refused, by name.
* The architecture comes from ``opt`` (hidden dim, heads, FFN, ``enc_layers`` for both the T2V and the saliency
  encoder, ``dec_layers``, queries, ``n_input_proj``, feature dims, max lengths, clip length, ``use_txt_pos``) and
  is checked against the tensors' shapes. The model is ``encoder_type="qd_detr"`` with no Balance Tokens and one
  turn (``CorebaConfig.preset("qd_detr")`` for QD-DETR's defaults).
* Every parameter is mapped by name; a tensor left over or missing is an error naming it. The only tensors
  dropped on purpose are ones QD-DETR's inference never reads: ``txt_position_embed`` without ``use_txt_pos``
  (QD-DETR builds it anyway) and the training-only ``contrastive_align_projection_*`` heads.
* Options this model cannot express are errors naming the option: audio features, the CE span head
  (``span_loss_type="ce"``), pre-norm layers, learned video positions, a hidden dim other than 256 (QD-DETR's
  anchor sine embedding has 256 features), and inputs this project's data pipeline does not build (video
  without TEF, features not L2-normalised).

The converted model's outputs equal QD-DETR's own on the same inputs wherever QD-DETR's head-major T2V mask
does not act (B = 1, or a batch whose videos share one length): ``tests/test_convert.py`` checks this to 1e-5
against outputs of the official code stored in ``tests/data/qd_detr``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import re
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from coreba.atomic import replace_directory, staging_directory
from coreba.config import CorebaConfig
from coreba.model import CheckpointError, Coreba

QD_DETR_HIDDEN_DIM = 256  # its gen_sineembed_for_position hard-codes 128 features per anchor coordinate
CONVERSION_NAME = "conversion.json"
SAFE_GLOBALS = [argparse.Namespace]  # the only non-tensor class a QD-DETR checkpoint holds (its ``opt``)
REQUIRED_OPTIONS = ("hidden_dim", "nheads", "dim_feedforward", "enc_layers", "dec_layers", "num_queries",
                    "n_input_proj", "v_feat_dim", "t_feat_dim", "max_v_l", "max_q_l", "clip_length", "dropout",
                    "input_dropout", "use_txt_pos", "span_loss_type", "pre_norm", "position_embedding", "a_feat_dir",
                    "contrastive_align_loss", "ctx_mode", "no_norm_vfeat", "no_norm_tfeat")
TRAINING_ONLY_PREFIXES = ("contrastive_align_projection_query.", "contrastive_align_projection_txt.",
                          "contrastive_align_projection_vid.")


# ------------------------------------------------------------------------------------------------ reading
def load_qd_detr_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
    """(state_dict, opt as a dict, the rest of the file's entries) of a QD-DETR training checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no QD-DETR checkpoint at {path}")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.search(r"GLOBAL ([\w.]+)", str(err))
        if refused:
            raise CheckpointError(f"{path}: refused to load: it asks for {refused.group(1)}, and loading never runs "
                                  "code from the file (only tensors, plain containers and argparse.Namespace are "
                                  "allowed)") from err
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {_unpickler_reason(err)}") from err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {err}") from err
    if not isinstance(data, dict) or not {"model", "opt"} <= set(data):
        if isinstance(data, dict):
            keys = sorted(map(str, data))
            found = f"keys {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''} ({len(keys)} in all)"
        else:
            found = f"a {type(data).__name__}"
        hint = ("; it looks like this project's own weights: load its directory with Coreba.from_pretrained"
                if isinstance(data, dict) and "decoder.anchors.weight" in data else "")
        raise CheckpointError(f"{path} is not a QD-DETR training checkpoint: expected a dict with 'model' and "
                              f"'opt' (as QD-DETR's train.py saves), found {found}{hint}")
    state, opt = data["model"], data["opt"]
    if isinstance(opt, argparse.Namespace):
        opt = vars(opt)
    if not isinstance(opt, dict):
        raise CheckpointError(f"{path}: 'opt' should be QD-DETR's argparse.Namespace, got {type(opt).__name__}")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: 'model' should be a state dict of tensors")
    rest = {k: v for k, v in data.items() if k not in ("model", "opt")}
    return state, opt, rest


def _unpickler_reason(err: Exception) -> str:
    """The informative line of torch's weights-only error (the rest is generic advice)."""
    generic = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return next((line for line in lines if not line.startswith(generic)), lines[0] if lines else repr(err))


def _unsupported(option: str, value: Any, why: str) -> CheckpointError:
    return CheckpointError(f"QD-DETR option {option}={value!r} cannot be expressed by this model: {why}")


def config_from_opt(opt: dict[str, Any]) -> CorebaConfig:
    """The :class:`CorebaConfig` of QD-DETR's model as ``opt`` (its parsed options) builds it."""
    missing = [name for name in REQUIRED_OPTIONS if name not in opt]
    if missing:
        raise CheckpointError(f"QD-DETR options missing from the checkpoint's 'opt': {', '.join(missing)}")
    if opt["a_feat_dir"] is not None or opt.get("a_feat_dim") is not None:
        raise _unsupported("a_feat_dir", opt["a_feat_dir"], "audio features are not an input of this model")
    if opt["span_loss_type"] != "l1":
        raise _unsupported("span_loss_type", opt["span_loss_type"],
                           "only the 'l1' span head (normalised center, width) is built here, not 'ce'")
    if opt["pre_norm"]:
        raise _unsupported("pre_norm", opt["pre_norm"], "the layers here are post-norm, QD-DETR's default")
    if opt["position_embedding"] != "sine":
        raise _unsupported("position_embedding", opt["position_embedding"], "video positions are sine here")
    if opt["hidden_dim"] != QD_DETR_HIDDEN_DIM:
        raise _unsupported("hidden_dim", opt["hidden_dim"], f"QD-DETR's anchor sine embedding has "
                           f"{QD_DETR_HIDDEN_DIM} features, so its model only runs at hidden_dim {QD_DETR_HIDDEN_DIM}")
    if opt["ctx_mode"] != "video_tef":
        raise _unsupported("ctx_mode", opt["ctx_mode"], "coreba.data builds video features with the two temporal "
                           "endpoint (TEF) columns, QD-DETR's default 'video_tef'")
    for name in ("no_norm_vfeat", "no_norm_tfeat"):
        if opt[name]:
            raise _unsupported(name, opt[name], "coreba.data L2-normalises every feature source, as QD-DETR does "
                               "by default")
    try:
        return CorebaConfig.preset(
            "qd_detr", video_dim=opt["v_feat_dim"], text_dim=opt["t_feat_dim"], max_video_len=opt["max_v_l"],
            max_text_len=opt["max_q_l"], clip_length=float(opt["clip_length"]), hidden_dim=opt["hidden_dim"],
            num_heads=opt["nheads"], ffn_dim=opt["dim_feedforward"], dropout=opt["dropout"],
            input_dropout=opt["input_dropout"], num_qd_layers=opt["enc_layers"],
            num_saliency_layers=opt["enc_layers"], num_decoder_layers=opt["dec_layers"],
            num_queries=opt["num_queries"], num_input_proj_layers=opt["n_input_proj"],
            text_position_embedding=bool(opt["use_txt_pos"]))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"QD-DETR options do not describe a valid model: {err}") from err


# ------------------------------------------------------------------------------------------------ mapping
_ENCODER_LAYER = {"norm1": "norm1", "norm2": "norm2", "attn.out_proj": "self_attn.out_proj",
                  "ffn.net.0": "linear1", "ffn.net.3": "linear2"}
_DECODER_LAYER = {"sa_q_content": "sa_qcontent_proj", "sa_q_pos": "sa_qpos_proj", "sa_k_content": "sa_kcontent_proj",
                  "sa_k_pos": "sa_kpos_proj", "sa_v": "sa_v_proj", "self_attn.out_proj": "self_attn.out_proj",
                  "ca_q_content": "ca_qcontent_proj", "ca_q_pos": "ca_qpos_proj", "ca_k_content": "ca_kcontent_proj",
                  "ca_k_pos": "ca_kpos_proj", "ca_v": "ca_v_proj", "ca_q_sine": "ca_qpos_sine_proj",
                  "cross_attn.out_proj": "cross_attn.out_proj", "ffn.net.0": "linear1", "ffn.net.3": "linear2",
                  "norm1": "norm1", "norm2": "norm2", "norm3": "norm3"}
_TOP_LEVEL = {"saliency.token": "global_rep_token", "saliency.token_pos": "global_rep_pos",
              "saliency.proj_clip": "saliency_proj1", "saliency.proj_token": "saliency_proj2",
              "decoder.anchors": "query_embed", "decoder.class_head": "class_embed",
              "decoder.span_head": "span_embed", "decoder.norm": "transformer.decoder.norm",
              "decoder.ref_point_head": "transformer.decoder.ref_point_head",
              "decoder.query_scale": "transformer.decoder.query_scale",
              "decoder.ref_width_head": "transformer.decoder.ref_anchor_head",
              "decoder.refine_head": "transformer.decoder.bbox_embed",
              "text_pos.embedding": "txt_position_embed.position_embeddings",
              "text_pos.norm": "txt_position_embed.LayerNorm"}


def _source_of(key: str) -> tuple[str, int | None]:
    """This model's parameter ``key`` -> (QD-DETR's key, chunk of its packed q/k/v projection or None)."""
    for ours, theirs, table in (("encoder.blocks.0.layers.", "transformer.t2v_encoder.layers.", _ENCODER_LAYER),
                                ("saliency.layers.", "transformer.encoder.layers.", _ENCODER_LAYER),
                                ("decoder.layers.", "transformer.decoder.layers.", _DECODER_LAYER)):
        if key.startswith(ours):
            index, rest = key[len(ours):].split(".", 1)
            module, param = rest.rsplit(".", 1)
            if module == "ffn.net.1":  # PReLU
                return f"{theirs}{index}.activation.weight", None
            for chunk, proj in enumerate(("attn.q_proj", "attn.k_proj", "attn.v_proj")):
                if module == proj:
                    return f"{theirs}{index}.self_attn.in_proj_{param}", chunk
            return f"{theirs}{index}.{table[module]}.{param}", None
    for ours, theirs in (("video_proj.net.", "input_vid_proj."), ("text_proj.net.", "input_txt_proj.")):
        if key.startswith(ours):
            index, param = key[len(ours):].split(".")
            block, part = divmod(int(index), 4)  # blocks of [LayerNorm, Dropout, Linear, ReLU]
            return f"{theirs}{block}.{'LayerNorm' if part == 0 else 'net.1'}.{param}", None
    for ours, theirs in _TOP_LEVEL.items():
        if key == ours or key.startswith(ours + "."):
            return theirs + key[len(ours):], None
    raise AssertionError(f"no QD-DETR source known for parameter {key}")  # a model change the map missed


def _unused_by_qd_detr(key: str, config: CorebaConfig, opt: dict[str, Any]) -> bool:
    """Tensors QD-DETR's checkpoint holds but its inference never reads."""
    if key.startswith("txt_position_embed.") and not config.text_position_embedding:
        return True  # QD-DETR builds its text positions whether or not use_txt_pos is set
    return bool(opt["contrastive_align_loss"]) and key.startswith(TRAINING_ONLY_PREFIXES)


def map_state_dict(state: dict[str, Tensor], config: CorebaConfig, opt: dict[str, Any]) -> dict[str, Tensor]:
    """QD-DETR's state dict -> this model's, strictly: every tensor used once, every parameter found."""
    with torch.device("meta"):
        expected = Coreba(config).state_dict()
    mapped: dict[str, Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    wrong: list[str] = []
    for key, like in expected.items():
        source, chunk = _source_of(key)
        if source not in state:
            missing.append(source)
            continue
        used.add(source)
        tensor = state[source]
        if chunk is not None:
            if tensor.shape[0] % 3:
                wrong.append(f"{source} {tuple(tensor.shape)} is not a packed q/k/v projection")
                continue
            tensor = tensor.chunk(3)[chunk]
        if tuple(tensor.shape) != tuple(like.shape) or not tensor.is_floating_point():
            wrong.append(f"{source} {tuple(tensor.shape)} {tensor.dtype} for {key} {tuple(like.shape)}")
            continue
        mapped[key] = tensor.detach().to(torch.float32).contiguous()
    leftover = sorted(k for k in state if k not in used and not _unused_by_qd_detr(k, config, opt))
    problems = []
    if missing:
        problems.append(f"missing {len(set(missing))} tensor(s): {', '.join(sorted(set(missing)))}")
    if leftover:
        problems.append(f"{len(leftover)} tensor(s) this model has no place for: {', '.join(leftover)}")
    if wrong:
        problems.append("shape mismatch: " + "; ".join(wrong))
    if problems:
        raise CheckpointError("QD-DETR state dict does not match the model its 'opt' describes: "
                              + " | ".join(problems))
    return mapped


def model_from_qd_detr(state: dict[str, Tensor], opt: dict[str, Any]) -> Coreba:
    """The :class:`Coreba` model of a loaded QD-DETR checkpoint (state dict and options), in eval mode."""
    config = config_from_opt(opt)
    mapped = map_state_dict(state, config, opt)
    model = Coreba(config)
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def from_qd_detr(path: str | Path) -> Coreba:
    """A QD-DETR training checkpoint (``model_best.ckpt``) as a :class:`Coreba` model, in eval mode."""
    state, opt, _ = load_qd_detr_checkpoint(path)
    return model_from_qd_detr(state, opt)


# ------------------------------------------------------------------------------------------------ CLI
def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_qd_detr(checkpoint: str | Path, output: str | Path, force: bool = False) -> Path:
    """Write the ``save_pretrained`` directory of a QD-DETR checkpoint to ``output``, atomically: it is built
    and re-loaded in a temporary sibling folder, and only then takes ``output``'s place."""
    checkpoint, output = Path(checkpoint), Path(output)
    if output.exists() and not force:
        raise FileExistsError(f"{output} exists; pass --force to replace it")
    state, opt, rest = load_qd_detr_checkpoint(checkpoint)
    model = model_from_qd_detr(state, opt)
    output.parent.mkdir(parents=True, exist_ok=True)
    with staging_directory(output) as tmp:
        model.save_pretrained(tmp)
        written, reread = model.state_dict(), Coreba.from_pretrained(tmp).state_dict()
        if written.keys() != reread.keys() or not all(torch.equal(written[k], reread[k]) for k in written):
            raise CheckpointError(f"the directory written for {checkpoint} does not read back identically")
        provenance = {"source": "qd-detr", "checkpoint": str(checkpoint), "sha256": _file_digest(checkpoint),
                      "epoch": rest.get("epoch"), "options": {k: opt[k] for k in REQUIRED_OPTIONS}}
        (tmp / CONVERSION_NAME).write_text(json.dumps(provenance, indent=2, default=str) + "\n")
        replace_directory(tmp, output)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coreba.convert", description=__doc__.split("\n\n")[0])
    sources = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    qd = sources.add_parser("qd-detr", help="a checkpoint saved by QD-DETR's train.py (github.com/wjun0830/QD-DETR)")
    required = qd.add_argument_group("required")
    required.add_argument("--checkpoint", required=True, type=Path, help="e.g. results/.../model_best.ckpt")
    required.add_argument("--output", required=True, type=Path, help="the save_pretrained directory to write")
    qd.add_argument("--force", action="store_true", help="replace --output if it exists (default: refuse)")
    args = parser.parse_args(argv)
    try:
        output = convert_qd_detr(args.checkpoint, args.output, force=args.force)
    except (CheckpointError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    config = CorebaConfig.load(output / "config.json")
    print(f"converted {args.checkpoint} -> {output}: QD-DETR with {config.num_qd_layers} T2V / "
          f"{config.num_saliency_layers} saliency / {config.num_decoder_layers} decoder layers, "
          f"{config.num_queries} queries, video dim {config.video_dim}, text dim {config.text_dim}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
