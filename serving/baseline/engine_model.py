"""Baseline (the served path before issue 12, see :mod:`serving.baseline`): ``coreba_baseline_engine``, the raw
graph on ONNX Runtime, first step of the ``coreba_baseline`` ensemble. As it served before, but for its imports
and the optional ``execute`` profile.

* ``initialize`` parses the model config (output dtypes, parameters), picks the ONNX Runtime provider from
  the instance kind (KIND_GPU -> CUDA on ``model_instance_device_id``, KIND_CPU -> CPU), creates the ONE
  session (:class:`coreba.engines.onnxruntime_engine.OnnxRuntimeEngine`) and reads the model's
  :class:`coreba.CorebaConfig` from the ONNX metadata; it refuses a config.pbtxt that disagrees with it.
* ``execute`` validates each request on its own with :func:`coreba.model.validation.validate_inputs` (a bad
  request gets an error response naming the problem; the others go on), concatenates the valid requests of
  one shape into ONE batch, runs the session once, and splits the outputs back: one response per request.
  Batching is exact: a sample's outputs depend neither on its padding nor on its batch-mates.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from coreba.config import CorebaConfig
from coreba.engines.onnxruntime_engine import OnnxRuntimeEngine
from coreba.model.validation import InputError, validate_inputs
from export.spec import INPUT_NAMES as ENGINE_INPUTS
from export.spec import OUTPUT_NAMES as ENGINE_OUTPUTS
from serving.backend_io import ExecuteProfiler, error_response, output_dtypes, string_parameters
from serving.baseline.torch_io import input_tensor, output_tensor
from serving.spec import ONNX_FILENAME


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.model_config = json.loads(args["model_config"])
        self.name = args["model_name"]
        params = string_parameters(self.model_config)
        self.output_dtypes = output_dtypes(self.model_config, ENGINE_OUTPUTS)
        gpu = args["model_instance_kind"] == "GPU"
        path = Path(args["model_repository"]) / args["model_version"] / params.get("onnx_filename", ONNX_FILENAME)
        self.engine = OnnxRuntimeEngine(
            path,
            provider="cuda" if gpu else "cpu",
            graph_optimization=params.get("graph_optimization", "all"),
            threads=int(params.get("intra_op_threads", "0")) or None,
            provider_options={"device_id": int(args["model_instance_device_id"])} if gpu else None,
        )
        metadata = self.engine.session.get_modelmeta().custom_metadata_map
        if "config" not in metadata:
            raise pb_utils.TritonModelException(f"{path} has no 'config' metadata: export it with export.onnx_export")
        self.config = CorebaConfig.from_json(metadata["config"])
        self._check_config_dims()
        self.profiler = ExecuteProfiler(self.name)
        self.execute = self.profiler.wrap(self.execute)

    def finalize(self) -> None:
        self.profiler.finalize()

    def _check_config_dims(self) -> None:
        """Fail at load time, by name, if config.pbtxt was written for another model than this ONNX file."""
        cfg = self.config
        expected = {"video_feats": cfg.video_dim, "text_feats": cfg.text_dim}
        for spec in self.model_config["input"]:
            name, dim = spec["name"], int(spec["dims"][-1])
            if name in expected and dim != expected[name]:
                raise pb_utils.TritonModelException(f"config.pbtxt gives {name} feature dim {dim}, the ONNX model "
                                                    f"expects {expected[name]}")

    def _read(self, request) -> dict[str, np.ndarray]:
        """The request's four inputs, validated (raises :class:`InputError` naming the problem)."""
        tensors = {name: input_tensor(request, name) for name in ENGINE_INPUTS}
        missing = [name for name, tensor in tensors.items() if tensor is None]
        if missing:
            raise InputError(f"missing input(s) {missing}")
        validate_inputs(self.config, *(tensors[name] for name in ENGINE_INPUTS))
        return {name: tensor.numpy() for name, tensor in tensors.items()}

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        groups: dict[tuple[int, int], list[tuple[int, dict[str, np.ndarray]]]] = {}  # (Lv, Lt) -> requests
        for index, request in enumerate(requests):
            try:
                feeds = self._read(request)
            except InputError as err:
                responses[index] = error_response(f"{self.name}: invalid input: {err}")
                continue
            shape = (feeds["video_feats"].shape[1], feeds["text_feats"].shape[1])
            groups.setdefault(shape, []).append((index, feeds))
        for members in groups.values():
            self._run_batch(members, responses)
        return responses

    def _run_batch(self, members: list[tuple[int, dict[str, np.ndarray]]], responses: list) -> None:
        """One session run for requests of one shape; every member gets its slice (or the failure)."""
        try:
            batch = {name: np.concatenate([feeds[name] for _, feeds in members]) for name in ENGINE_INPUTS}
            outputs = self.engine.run(batch)
        except Exception as err:  # an engine failure must reach the clients, not crash the model
            pb_utils.Logger.log_error(f"{self.name}: ONNX Runtime failed on a batch of {len(members)}: {err!r}")
            for index, _ in members:
                responses[index] = error_response(f"{self.name}: inference failed: {err}", invalid_input=False)
            return
        start = 0
        for index, feeds in members:
            stop = start + feeds["video_feats"].shape[0]
            tensors = [output_tensor(name, outputs[name][start:stop], self.output_dtypes[name])
                       for name in ENGINE_OUTPUTS]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start = stop
