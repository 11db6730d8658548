"""The serving contract: model names, tensor names and defaults, shared by the repository builder, the
Python-backend model, the client, the tests and the load test. Change a name here and nowhere else.

Every served model runs the END-TO-END graph (``export.onnx_export.export_onnx(..., end_to_end=True)``) in one
step: the model's inputs plus ``duration`` in, the answer out (layout: :mod:`coreba.answer`). They differ only
in the backend that runs it:

* ``coreba``       the Python backend running ONNX Runtime (CPU, or CUDA): the model clients call, what CI serves;
* ``coreba_onnx``  Triton's own ONNX Runtime backend (NGC images, GPU by default);
* ``coreba_trt``   Triton's TensorRT backend, a plan built from the same graph (only with ``--plan``).

The two-step path of before (a raw-output engine, then a Python post-processing model, joined by an ensemble)
is kept only as the load test's baseline (:mod:`serving.baseline`), written with ``--baseline``.
"""

from __future__ import annotations

from export.spec import ANSWER_NAMES, DURATION, END_TO_END_INPUT_NAMES  # noqa: F401 (DURATION re-exported)

SERVED = "coreba"  # the ONE model a client calls
ENGINE_MODELS: dict[str, str] = {"python": SERVED, "onnx": "coreba_onnx", "trt": "coreba_trt"}
ALL_MODELS: tuple[str, ...] = tuple(ENGINE_MODELS.values())
# what earlier layouts wrote beside them (the raw-graph engine and the post-processing model of the old ensemble):
# the builder removes them, as its own, so that a server never loads a model of the old layout
LEGACY_MODELS: tuple[str, ...] = ("coreba_python", "coreba_postprocess")

# video_feats, video_mask, text_feats, text_mask, duration; clients send duration as (B, 1) float32 seconds
SERVED_INPUTS: tuple[str, ...] = END_TO_END_INPUT_NAMES
ANSWER_OUTPUTS: tuple[str, ...] = ANSWER_NAMES  # moments, saliency, num_clips

ONNX_FILENAME = "model.onnx"
PLAN_FILENAME = "model.plan"
WARMUP_FOLDER = "warmup"  # Triton reads model_warmup's input_data_file from <model>/warmup/
PROFILE_ENV = "COREBA_PROFILE_EXECUTE"  # a folder: each Python model instance writes a cProfile of execute() there

# dynamic batching defaults (flags of build_repository override them)
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_PREFERRED_BATCH_SIZES: tuple[int, ...] = ()
# Measured (docs/serving.md, "Where the time went"): a delay only adds latency on 2 CPU cores. Requests that
# arrive while the one instance computes are batched anyway, as they wait in the queue.
DEFAULT_MAX_QUEUE_DELAY_US = 0
