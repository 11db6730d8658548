"""Checks of ``config.pbtxt`` files: Triton's ModelConfig schema, then what the schema cannot express.

Used by the repository builder when it writes a repository and by the tests, so that a config which
would fail at server start (a wrong field, a batch size out of bounds, an ensemble wired to a tensor that
does not exist, a dtype or shape mismatch between steps) fails in Python with a message naming it. This
matters most for ``coreba_onnx`` and ``coreba_trt``, which cannot be loaded where there is no GPU: their
warm-up files are checked against their inputs, and every one-step model must offer clients the same tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from serving.model_configs import NUMPY_DTYPES, parse_pbtxt
from serving.spec import ALL_MODELS, WARMUP_FOLDER


class ConfigCheckError(ValueError):
    """A model configuration Triton would reject (or serve wrongly); the message names model and field."""


def read_config(model_dir: str | Path) -> mc.ModelConfig:
    """Parse ``model_dir/config.pbtxt`` against ModelConfig; the model's name must be its folder's name."""
    path = Path(model_dir) / "config.pbtxt"
    try:
        config = parse_pbtxt(path.read_text())
    except text_format.ParseError as err:
        raise ConfigCheckError(f"{path}: not a valid Triton ModelConfig: {err}") from err
    if config.name != path.parent.name:
        raise ConfigCheckError(f"{path}: name {config.name!r} differs from its folder {path.parent.name!r}")
    check_model_config(config)
    check_warmup(config, path.parent)
    return config


def check_warmup(config: mc.ModelConfig, model_dir: Path) -> None:
    """Every warm-up request gives every input, with the input's dtype and dims, from a file of the right size
    in ``<model>/warmup/`` (Triton refuses to load the model otherwise)."""
    inputs = {t.name: t for t in config.input}
    for warmup in config.model_warmup:
        where = f"model {config.name!r} warm-up {warmup.name!r}"
        if sorted(warmup.inputs) != sorted(inputs):
            raise ConfigCheckError(f"{where}: gives inputs {sorted(warmup.inputs)}, the model takes {sorted(inputs)}")
        if not 1 <= warmup.batch_size <= max(1, config.max_batch_size):
            raise ConfigCheckError(f"{where}: batch_size {warmup.batch_size} outside 1..{config.max_batch_size}")
        for name, given in warmup.inputs.items():
            tensor = inputs[name]
            if given.data_type != tensor.data_type or list(given.dims) != list(tensor.dims):
                raise ConfigCheckError(f"{where}: input {name!r} is {mc.DataType.Name(given.data_type)} "
                                       f"{list(given.dims)}, the model takes {mc.DataType.Name(tensor.data_type)} "
                                       f"{list(tensor.dims)}")
            data = model_dir / WARMUP_FOLDER / given.input_data_file
            size = int(np.prod(given.dims)) * np.dtype(NUMPY_DTYPES[given.data_type]).itemsize
            if not data.is_file() or data.stat().st_size != size:
                found = f"{data.stat().st_size} bytes" if data.is_file() else "missing"
                raise ConfigCheckError(f"{where}: {data} should hold {size} bytes for {name!r}, {found}")


def check_same_interface(configs: Mapping[str, mc.ModelConfig]) -> None:
    """The one-step models present (``coreba``, ``coreba_onnx``, ``coreba_trt``) take and return the same tensors,
    so a client can call any of them."""
    present = [configs[name] for name in ALL_MODELS if name in configs]

    def interface(config: mc.ModelConfig) -> tuple:
        return (config.max_batch_size,
                [(t.name, t.data_type, list(t.dims), list(t.reshape.shape)) for t in config.input],
                [(t.name, t.data_type, list(t.dims)) for t in config.output])

    for config in present[1:]:
        if interface(config) != interface(present[0]):
            raise ConfigCheckError(f"model {config.name!r} does not offer the tensors of {present[0].name!r}: "
                                   f"{interface(config)} vs {interface(present[0])}")


def _dims_ok(dims: Sequence[int]) -> bool:
    return len(dims) > 0 and all(d == -1 or d > 0 for d in dims)


def check_model_config(config: mc.ModelConfig) -> None:
    """One model on its own: a platform or backend, unique tensor names, valid dims and batching bounds."""
    where = f"model {config.name!r}"
    if not config.name:
        raise ConfigCheckError("a model config without a name")
    if bool(config.platform) == bool(config.backend):
        raise ConfigCheckError(f"{where}: set exactly one of platform ({config.platform!r}) and backend "
                               f"({config.backend!r})")
    if config.max_batch_size < 0:
        raise ConfigCheckError(f"{where}: max_batch_size {config.max_batch_size} < 0")
    for kind, tensors in (("input", config.input), ("output", config.output)):
        names = [t.name for t in tensors]
        if not names or len(set(names)) != len(names):
            raise ConfigCheckError(f"{where}: {kind} names must be present and unique, got {names}")
        for tensor in tensors:
            if tensor.data_type == mc.TYPE_INVALID or not _dims_ok(tensor.dims):
                raise ConfigCheckError(f"{where}: {kind} {tensor.name!r} has dtype "
                                       f"{mc.DataType.Name(tensor.data_type)} and dims {list(tensor.dims)}")
    if config.HasField("dynamic_batching"):
        if config.max_batch_size < 1:
            raise ConfigCheckError(f"{where}: dynamic batching needs max_batch_size >= 1")
        bad = [s for s in config.dynamic_batching.preferred_batch_size if not 1 <= s <= config.max_batch_size]
        if bad:
            raise ConfigCheckError(f"{where}: preferred batch sizes {bad} outside 1..{config.max_batch_size}")
    if config.platform == "ensemble" and not config.ensemble_scheduling.step:
        raise ConfigCheckError(f"{where}: an ensemble without steps")


def _compatible(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b))


def check_ensemble(ensemble: mc.ModelConfig, models: Mapping[str, mc.ModelConfig]) -> None:
    """Every step's model is present and batches as far as the ensemble; every mapped tensor exists on both
    sides with one dtype and compatible dims; every ensemble output is produced."""
    where = f"ensemble {ensemble.name!r}"
    available = {t.name: (t.data_type, list(t.dims)) for t in ensemble.input}  # ensemble tensor -> dtype, dims
    for step in ensemble.ensemble_scheduling.step:
        model = models.get(step.model_name)
        if model is None:
            raise ConfigCheckError(f"{where}: step model {step.model_name!r} is not in the repository")
        if model.max_batch_size < ensemble.max_batch_size:
            raise ConfigCheckError(f"{where}: max_batch_size {ensemble.max_batch_size} exceeds "
                                   f"{step.model_name!r}'s {model.max_batch_size}")
        inputs = {t.name: t for t in model.input}
        missing = sorted(name for name, t in inputs.items() if not t.optional and name not in step.input_map)
        if missing:
            raise ConfigCheckError(f"{where}: step {step.model_name!r} leaves input(s) {missing} unmapped")
        for model_name, tensor_name in step.input_map.items():
            if model_name not in inputs:
                raise ConfigCheckError(f"{where}: {step.model_name!r} has no input {model_name!r}")
            if tensor_name not in available:
                raise ConfigCheckError(f"{where}: tensor {tensor_name!r} for {step.model_name}.{model_name} is "
                                       "neither an ensemble input nor an earlier step's output")
            dtype, dims = available[tensor_name]
            target = inputs[model_name]
            if dtype != target.data_type or not _compatible(dims, target.dims):
                raise ConfigCheckError(
                    f"{where}: {tensor_name!r} ({mc.DataType.Name(dtype)} {dims}) does not fit "
                    f"{step.model_name}.{model_name} ({mc.DataType.Name(target.data_type)} {list(target.dims)})")
        outputs = {t.name: t for t in model.output}
        for model_name, tensor_name in step.output_map.items():
            if model_name not in outputs:
                raise ConfigCheckError(f"{where}: {step.model_name!r} has no output {model_name!r}")
            available[tensor_name] = (outputs[model_name].data_type, list(outputs[model_name].dims))
    for out in ensemble.output:
        if out.name not in available:
            raise ConfigCheckError(f"{where}: no step produces output {out.name!r}")
        dtype, dims = available[out.name]
        if dtype != out.data_type or not _compatible(dims, out.dims):
            raise ConfigCheckError(f"{where}: output {out.name!r} is {mc.DataType.Name(out.data_type)} "
                                   f"{list(out.dims)} but its step gives {mc.DataType.Name(dtype)} {dims}")


def model_dirs(repository: str | Path) -> list[Path]:
    """The model folders of a repository: those holding a ``config.pbtxt``."""
    return [d for d in sorted(Path(repository).iterdir()) if (d / "config.pbtxt").is_file()]


def check_models(folders: Sequence[Path]) -> dict[str, mc.ModelConfig]:
    """Read and check each model folder, and every ensemble among them against its steps."""
    configs = {d.name: read_config(d) for d in folders}
    for config in configs.values():
        if config.platform == "ensemble":
            check_ensemble(config, configs)
    check_same_interface(configs)
    return configs


def check_repository(repository: str | Path) -> dict[str, mc.ModelConfig]:
    """Read and check every model of a repository (and every ensemble against its steps)."""
    folders = model_dirs(repository)
    if not folders:
        raise ConfigCheckError(f"{repository}: no model folder with a config.pbtxt")
    return check_models(folders)
