"""The serving contract: model names, tensor names and defaults, shared by the repository builder, the
Python-backend models, the client, the tests and the load test. Change a name here and nowhere else.

The engine models keep the export's tensor names (:mod:`export.spec`); the ensemble adds ``duration`` on the
way in and returns the post-processed answer (:mod:`serving.answer` defines its layout).
"""

from __future__ import annotations

from export.spec import INPUT_NAMES, OUTPUT_NAMES

ENSEMBLE = "coreba"  # the ONE model a client calls
POSTPROCESS = "coreba_postprocess"
ENGINE_MODELS: dict[str, str] = {"python": "coreba_python", "onnx": "coreba_onnx", "trt": "coreba_trt"}
ALL_MODELS: tuple[str, ...] = (ENSEMBLE, POSTPROCESS, *ENGINE_MODELS.values())

ENGINE_INPUTS: tuple[str, ...] = INPUT_NAMES  # video_feats, video_mask, text_feats, text_mask
ENGINE_OUTPUTS: tuple[str, ...] = OUTPUT_NAMES  # pred_logits, pred_spans, saliency_scores
DURATION = "duration"  # (B, 1) float32 seconds, one per request
ENSEMBLE_INPUTS: tuple[str, ...] = (*ENGINE_INPUTS, DURATION)
POSTPROCESS_INPUTS: tuple[str, ...] = (*ENGINE_OUTPUTS, "video_mask", "text_mask", DURATION)
ANSWER_OUTPUTS: tuple[str, ...] = ("moments", "saliency", "num_clips")

ONNX_FILENAME = "model.onnx"
PLAN_FILENAME = "model.plan"

# dynamic batching defaults (flags of build_repository override them)
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_PREFERRED_BATCH_SIZES: tuple[int, ...] = (4, 8)
DEFAULT_MAX_QUEUE_DELAY_US = 2000  # long enough on 2 CPU cores for concurrent requests to meet in one batch
