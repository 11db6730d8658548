"""Triton Python-backend model ``coreba``: the end-to-end graph on ONNX Runtime or OpenVINO, the model clients call.

One step per batch, no second model: the graph holds the post-processing, so the engine returns the answer
(moments, saliency, num_clips) and the model hands it back as it came.

* ``initialize`` parses the model config (parameters): ``engine`` (onnxruntime, the default, or openvino),
  ``precision`` (fp32; bf16 for openvino; int8 for a model from export/quantize.py), ``model_filename``,
  ``graph_optimization`` (ONNX Runtime), ``intra_op_threads`` (0: the CPU cores shared out among the model's
  instances) and ``cpu_streams`` (ONNX Runtime on CPU: 0 = one per thread, 1 = off; :mod:`serving.cpu_streams`).
  ONNX Runtime's provider follows the instance kind (KIND_GPU -> CUDA on ``model_instance_device_id``).
  It creates the ONE engine and checks the model file against the config: an end-to-end graph, its K and
  feature dims those of config.pbtxt (a mismatch fails the load, by name).
* ``execute`` reads each request's inputs as numpy views of the request's memory (DLPack, no torch), checks
  their values (:func:`serving.request_checks.check_request`; a bad request gets an error response naming the
  problem, the others go on), copies the valid ones into one batch, runs the engine ONCE on it and gives each
  request its rows of the outputs (ONNX Runtime: without a copy). With CPU streams a lone query on a quiet
  server runs the same way, on every thread; any other batch is handed over and execute returns None at once:
  each request's response sender then sends its one final response (a bad request's at once), and the
  instance takes the next requests meanwhile.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from coreba.engines import load_engine, model_file_metadata
from coreba.model.validation import InputError
from coreba.onnx_io import GRAPH_KEY, OnnxFileError, config_of, graph_of, top_k_of
from serving.backend_io import (
    ExecuteProfiler,
    error_response,
    input_array,
    instance_count,
    output_tensor,
    string_parameters,
)
from serving.cpu_streams import CpuStreams
from serving.request_checks import check_request
from serving.spec import ANSWER_OUTPUTS, DURATION, ONNX_FILENAME, SERVED_INPUTS


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.model_config = json.loads(args["model_config"])
        self.name = args["model_name"]
        params = string_parameters(self.model_config)
        gpu = args["model_instance_kind"] == "GPU"
        threads = int(params.get("intra_op_threads", "0")) or max(1, len(os.sched_getaffinity(0))
                                                                  // instance_count(self.model_config))
        path = Path(args["model_repository"]) / args["model_version"] / params.get("model_filename", ONNX_FILENAME)
        engine = params.get("engine", "onnxruntime")
        options: dict = {"precision": params.get("precision", "fp32"), "threads": threads}
        if engine == "onnxruntime":
            options.update(provider="cuda" if gpu else "cpu",
                           graph_optimization=params.get("graph_optimization", "all"),
                           provider_options={"device_id": int(args["model_instance_device_id"])} if gpu else None)
        try:
            self.engine = load_engine(engine, path, device="cuda" if gpu else "cpu", **options)
        except (ValueError, OSError, RuntimeError) as err:  # e.g. bf16 on a CPU without it: say so at load
            raise pb_utils.TritonModelException(f"{self.name}: cannot load {engine} on {path}: {err}") from None
        self.streams = None
        streams = int(params.get("cpu_streams", "0")) or threads
        if engine == "onnxruntime" and not gpu and streams > 1:
            self.streams = CpuStreams.load(path, streams, self.engine, list(ANSWER_OUTPUTS),
                                      max_rows=int(self.model_config.get("max_batch_size", 0)) or 1,
                                      graph_optimization=params.get("graph_optimization", "all"),
                                      precision=options["precision"])
        self.run_answer = self._answer_runner()
        self._check_graph(path)
        self.profiler = ExecuteProfiler(self.name)
        self.execute = self.profiler.wrap(self.execute)

    def _answer_runner(self) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
        """The engine's call, answer arrays in ``ANSWER_OUTPUTS`` order. ONNX Runtime's session is called directly:
        its outputs are handed to Triton without the engine wrapper's dtype pass."""
        session = getattr(self.engine, "session", None)
        if session is not None:
            return lambda batch: session.run(list(ANSWER_OUTPUTS), batch)
        return lambda batch: [self.engine.run(batch)[name] for name in ANSWER_OUTPUTS]

    def _check_graph(self, path: Path) -> None:
        """Fail at load time, by name, if config.pbtxt was written for another graph than this model file."""
        session = getattr(self.engine, "session", None)
        # ONNX Runtime: the metadata as it read it with the graph (no second parse); interpreted by coreba.onnx_io
        metadata = dict(session.get_modelmeta().custom_metadata_map) if session is not None \
            else model_file_metadata(path)
        if graph_of(metadata) != "end_to_end":
            raise pb_utils.TritonModelException(f"{path} is not an end-to-end graph (metadata graph="
                                                f"{metadata.get(GRAPH_KEY)!r}): export it with export/to_onnx.py "
                                                "--end-to-end")
        try:
            cfg, top_k = config_of(metadata, path), top_k_of(metadata, path)
        except OnnxFileError as err:
            raise pb_utils.TritonModelException(str(err)) from None
        dims = {spec["name"]: [int(d) for d in spec["dims"]]
                for spec in self.model_config["input"] + self.model_config["output"]}
        expected = {"video_feats": cfg.video_dim, "text_feats": cfg.text_dim, "moments": top_k}
        for name, value in expected.items():
            axis = 0 if name == "moments" else -1
            if dims[name][axis] != value:
                raise pb_utils.TritonModelException(f"config.pbtxt gives {name} dims {dims[name]}, the model file "
                                                    f"{path} has {value} there")
        if sorted(self.engine.output_names) != sorted(ANSWER_OUTPUTS):
            raise pb_utils.TritonModelException(f"{path} returns {self.engine.output_names}, "
                                                f"not {list(ANSWER_OUTPUTS)}")

    def _read(self, request) -> dict[str, np.ndarray]:
        """The request's inputs (views, no copy), checked (raises :class:`InputError` naming the problem)."""
        arrays = {name: input_array(request, name) for name in SERVED_INPUTS}
        missing = [name for name, array in arrays.items() if array is None]
        if missing:  # Triton refuses such requests before they get here; a direct call of execute might not
            raise InputError(f"missing input(s) {missing}")
        check_request(arrays)
        arrays[DURATION] = arrays[DURATION].reshape(-1)  # (B, 1) as clients send it -> the graph's (B,)
        return arrays

    def execute(self, requests: list) -> list | None:
        members, failures = self._read_all(requests)
        if not members:
            return self._responses(len(requests), failures)
        batch = self._batch(members)
        try:
            outputs = self.run_answer(batch) if self.streams is None else self.streams.run_if_quiet(batch)
        except Exception as err:  # an engine failure must reach the clients, not crash the model
            outputs = err
        if outputs is None:  # the streams take the batch: answered through the response senders
            self._hand_over(requests, members, failures, batch)
            return None
        return self._responses(len(requests), failures + self._answers(members, outputs))

    @staticmethod
    def _responses(count: int, answers: list[tuple[int, object]]) -> list:
        """execute's list: each request's response at its index."""
        responses: list = [None] * count
        for index, response in answers:
            responses[index] = response
        return responses

    def _hand_over(self, requests: list, members: list[tuple[int, dict[str, np.ndarray]]],
                   failures: list[tuple[int, object]], batch: dict[str, np.ndarray]) -> None:
        """Hands the batch to :class:`serving.cpu_streams.CpuStreams` (execute then returns None): each request gets
        its one final response from its sender, now (a bad request) or when its batch is computed."""
        senders = [request.get_response_sender() for request in requests]

        def send(answers: list[tuple[int, object]]) -> None:
            for index, response in answers:
                try:
                    senders[index].send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                except Exception as err:  # e.g. the client went away: nothing to answer, the model goes on
                    pb_utils.Logger.log_error(f"{self.name}: could not send a response: {err!r}")

        send(failures)
        try:  # submit answers through ``done`` once it has the batch; before that, a failure is answered here
            self.streams.submit(batch, lambda outputs, error: send(self._answers(members, error or outputs)))
        except Exception as err:  # e.g. the model is being unloaded: the requests still get their one answer
            send(self._answers(members, err))

    def _read_all(self, requests: list) -> tuple[list[tuple[int, dict[str, np.ndarray]]], list[tuple[int, object]]]:
        """(index, inputs) of the valid requests; (index, error response) of the others."""
        members, failures = [], []
        for index, request in enumerate(requests):
            try:
                members.append((index, self._read(request)))
            except InputError as err:
                failures.append((index, error_response(f"{self.name}: invalid input: {err}")))
        return members, failures

    @staticmethod
    def _batch(members: list[tuple[int, dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
        """The valid requests as one batch (all of one shape: config.pbtxt fixes the lengths), in memory of this
        process: ONNX Runtime ran slower on views of the request's shared memory (a lone query over shared memory
        took 1.2-1.4x the engine's B=1 median, 1.0x on a copy: docs/serving.md), and a stream may run the batch
        after the request's buffers are gone."""
        if len(members) == 1:
            return {name: np.array(array, copy=True) for name, array in members[0][1].items()}
        return {name: np.concatenate([arrays[name] for _, arrays in members]) for name in SERVED_INPUTS}

    def _answers(self, members: list[tuple[int, dict[str, np.ndarray]]],
                 outputs: list[np.ndarray] | BaseException) -> list[tuple[int, object]]:
        """Each member's response: its rows of the outputs, or the engine's failure."""
        if isinstance(outputs, BaseException):
            pb_utils.Logger.log_error(f"{self.name}: {self.engine.name} failed on a batch of {len(members)}: "
                                      f"{outputs!r}")
            return [(index, error_response(f"{self.name}: inference failed: {outputs}", invalid_input=False))
                    for index, _ in members]
        answers, start = [], 0
        for index, arrays in members:
            stop = start + arrays[DURATION].shape[0]
            tensors = [output_tensor(name, output[start:stop]) for name, output in zip(ANSWER_OUTPUTS, outputs)]
            answers.append((index, pb_utils.InferenceResponse(output_tensors=tensors)))
            start = stop
        return answers

    def finalize(self) -> None:
        if self.streams is not None:
            self.streams.close()  # every batch handed over is answered before the model goes
            pb_utils.Logger.log_info(f"{self.name}: {self.streams.stats.summary()}")  # read by serving.perf
        self.profiler.finalize()
