"""Stand-ins for the ``tensorrt`` module of TensorRT 10.x and 11.x: the build path's API, nothing more.

Each fake has exactly the names the real bindings of that major have for what ``export.tensorrt_build``
calls (enums are ``IntEnum``s, so a name that version lacks raises AttributeError, as the real module
does). TensorRT 11 removed the weak-typing builder flags (FP16, BF16, INT8, FP8, INT4, FP4, the precision
constraint flags), ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` and the ``platform_has_*`` queries,
and keeps ``STRONGLY_TYPED`` (value 0, deprecated and ignored: every network is strongly typed) and
``BuilderFlag.TF32``. Every call is recorded in ``module.calls`` for the tests to read.
"""

from __future__ import annotations

import enum
import types
from typing import Any

_COMMON_FLAGS = {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6,
                 "SPARSE_WEIGHTS": 7, "VERSION_COMPATIBLE": 13, "STRIP_PLAN": 19}
_WEAK_TYPING_FLAGS = {"FP16": 0, "INT8": 1, "OBEY_PRECISION_CONSTRAINTS": 9, "PREFER_PRECISION_CONSTRAINTS": 10,
                      "FP8": 15, "BF16": 17, "INT4": 22, "FP4": 26}


def fake_tensorrt(version: str, strongly_typed_flag: bool = True, parser_errors: tuple[str, ...] = ()) -> Any:
    """A module object that behaves like ``import tensorrt`` of ``version`` along the build path."""
    major = int(version.split(".")[0])
    trt: Any = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []
    record = trt.calls.append

    flags = dict(_COMMON_FLAGS, **(_WEAK_TYPING_FLAGS if major < 11 else {}))
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    creation = {"EXPLICIT_BATCH": 0} if major < 11 else {}
    if strongly_typed_flag:
        creation["STRONGLY_TYPED"] = 1 if major < 11 else 0
    creation["PREFER_JIT_PYTHON_PLUGINS"] = 2 if major < 11 else 1
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            record(("Logger", severity))

    class ParserError:
        def __init__(self, index: int, text: str) -> None:
            self.index, self.text = index, text

        def node(self) -> int:
            return self.index

        def node_name(self) -> str:
            return f"node_{self.index}"

        def node_operator(self) -> str:
            return "Unique"

        def desc(self) -> str:
            return self.text

        def code(self) -> str:
            return "ErrorCode.UNSUPPORTED_NODE"

    class OnnxParser:
        def __init__(self, network: Any, logger: Any) -> None:
            self.num_errors = 0

        def parse_from_file(self, path: str) -> bool:
            record(("parse_from_file", path))
            self.num_errors = len(parser_errors)
            return not parser_errors

        def get_error(self, index: int) -> ParserError:
            return ParserError(index, parser_errors[index])

    class TimingCache:
        def serialize(self) -> bytes:
            return b"timing cache"

    class Profile:
        def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
            record(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class BuilderConfig:
        def set_flag(self, flag: Any) -> None:
            record(("set_flag", trt.BuilderFlag(flag).name))

        def clear_flag(self, flag: Any) -> None:
            record(("clear_flag", trt.BuilderFlag(flag).name))

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            record(("set_memory_pool_limit", trt.MemoryPoolType(pool).name, size))

        def add_optimization_profile(self, profile: Profile) -> int:
            return 0

        def create_timing_cache(self, blob: bytes) -> TimingCache:
            return TimingCache()

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            return True

        def get_timing_cache(self) -> TimingCache:
            return TimingCache()

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int = 0) -> object:
            record(("create_network", flags))
            return object()

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Any, config: Any) -> bytes:
            record(("build_serialized_network",))
            return b"fake plan"

    if major < 11:  # queries removed in 11
        Builder.platform_has_fast_fp16 = True  # type: ignore[attr-defined]
        Builder.platform_has_tf32 = True  # type: ignore[attr-defined]
    trt.Logger, trt.OnnxParser, trt.Builder = Logger, OnnxParser, Builder
    return trt


def flags_of(trt: Any) -> tuple[set[str], set[str], list[int]]:
    """(flags set, flags cleared, create_network flags) recorded by a fake."""
    set_ = {c[1] for c in trt.calls if c[0] == "set_flag"}
    cleared = {c[1] for c in trt.calls if c[0] == "clear_flag"}
    network = [c[1] for c in trt.calls if c[0] == "create_network"]
    return set_, cleared, network
