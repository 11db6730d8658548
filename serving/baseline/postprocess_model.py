"""Baseline (the served path before issue 12, see :mod:`serving.baseline`): ``coreba_baseline_postprocess``,
engine outputs -> the user's answer, second step of the ``coreba_baseline`` ensemble. As it served before, but
for its imports, the guard kept here and the optional ``execute`` profile.

It calls :func:`coreba.postprocess.postprocess`, the ONE post-processing of the project (the same the
``Predictor`` and ``coreba.predict`` use), on each request, then packs the variable-length answer into the
fixed-shape layout of :mod:`coreba.answer` (moments (B, K, 3), saliency (B, Lv) + num_clips (B, 1)).
K, the number of moments returned, is the first dim of the ``moments`` output in config.pbtxt: the config
is the source of truth. Requests that cannot be answered (:func:`check_answerable`) get an error response
naming the problem; the others are answered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import triton_python_backend_utils as pb_utils

from coreba.answer import pack_answer
from coreba.model.validation import InputError, check_masks_not_empty
from coreba.postprocess import postprocess
from serving.backend_io import ExecuteProfiler, error_response, output_dtypes
from serving.baseline import POSTPROCESS_INPUTS
from serving.baseline.torch_io import input_tensor, output_tensor
from serving.spec import ANSWER_OUTPUTS


def check_answerable(arrays: Mapping[str, np.ndarray]) -> None:
    """The post-processing model's guard, whatever engine ran before it: each query needs a valid clip, a valid
    token and a finite positive duration, and the engine's outputs must be finite. Raises :class:`InputError`."""
    check_masks_not_empty(arrays["video_mask"], arrays["text_mask"])
    duration = np.asarray(arrays["duration"], dtype=np.float64).reshape(-1)
    if not (np.isfinite(duration).all() and (duration > 0).all()):
        raise InputError(f"duration must be finite and positive (seconds), got {duration.tolist()}")
    for name in ("pred_logits", "pred_spans", "saliency_scores"):
        if not np.isfinite(arrays[name]).all():
            raise InputError(f"the engine returned NaN/Inf in {name}: the request's features hold NaN or Inf values")


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.model_config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.output_dtypes = output_dtypes(self.model_config, ANSWER_OUTPUTS)
        moments = pb_utils.get_output_config_by_name(self.model_config, "moments")
        self.top_k = int(moments["dims"][0])
        self.profiler = ExecuteProfiler(self.name)
        self.execute = self.profiler.wrap(self.execute)

    def finalize(self) -> None:
        self.profiler.finalize()

    def execute(self, requests: list) -> list:
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        try:
            tensors = {name: input_tensor(request, name) for name in POSTPROCESS_INPUTS}
            missing = [name for name, tensor in tensors.items() if tensor is None]
            if missing:
                raise InputError(f"missing input(s) {missing}")
            arrays = {name: tensor.numpy() for name, tensor in tensors.items()}
            check_answerable(arrays)
            results = postprocess(arrays["pred_logits"], arrays["pred_spans"], arrays["saliency_scores"],
                                  arrays["video_mask"], durations=arrays["duration"].reshape(-1), top_k=self.top_k)
            answer = pack_answer(results, self.top_k, num_slots=arrays["saliency_scores"].shape[1])
        except (InputError, ValueError) as err:
            return error_response(f"{self.name}: invalid input: {err}")
        except Exception as err:  # never crash the model: the client gets the failure
            pb_utils.Logger.log_error(f"{self.name}: post-processing failed: {err!r}")
            return error_response(f"{self.name}: post-processing failed: {err}", invalid_input=False)
        tensors = [output_tensor(name, answer[name], self.output_dtypes[name]) for name in ANSWER_OUTPUTS]
        return pb_utils.InferenceResponse(output_tensors=tensors)
