"""What the CPU can do for reduced precision: AVX2, AVX-512, VNNI (int8 dot products), BF16, AMX.

One module answers "may this engine run bf16 here?" for every engine, so OpenVINO and PyTorch refuse the same
CPUs with the same message. The source is the kernel's flag list (``/proc/cpuinfo``); where it cannot be read
(not Linux), OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU device stands in when OpenVINO is installed.

Why refuse rather than fall back: without AVX512_BF16 or AMX, bf16 is emulated (PyTorch) or silently run in
fp32 (OpenVINO), so a "bf16" figure would be a slower or mislabelled fp32 one. Int8 runs everywhere, but
only VNNI (AVX512_VNNI, AVX_VNNI or AMX) makes it fast; without it the report says so.

    python -m coreba.engines.isa        # prints e.g. "AVX2 yes, AVX-512 yes, VNNI yes, BF16 yes, AMX no (...)"
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from coreba.engines.base import EngineUnavailable

CPUINFO = "/proc/cpuinfo"
# flag names as Linux spells them in /proc/cpuinfo
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
AMX_FLAGS = frozenset({"amx_tile", "amx_bf16", "amx_int8"})


class PrecisionUnavailable(EngineUnavailable):
    """The CPU lacks the instructions a precision needs; the message names them and what the CPU has."""


@dataclass(frozen=True)
class CpuIsa:
    avx2: bool
    avx512: bool
    vnni: bool
    bf16: bool
    amx: bool
    source: str  # where the answer came from: "/proc/cpuinfo", "openvino", or "unknown"

    @classmethod
    def from_flags(cls, flags: Iterable[str], source: str = CPUINFO) -> CpuIsa:
        f = {flag.lower() for flag in flags}
        return cls(avx2="avx2" in f, avx512="avx512f" in f, vnni=bool(f & VNNI_FLAGS), bf16=bool(f & BF16_FLAGS),
                   amx=bool(f & AMX_FLAGS), source=source)

    def flags(self) -> dict[str, bool]:
        return {"AVX2": self.avx2, "AVX-512": self.avx512, "VNNI": self.vnni, "BF16": self.bf16, "AMX": self.amx}

    def summary(self) -> str:
        return ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in self.flags().items()) + f" (from {self.source})"

    def require(self, precision: str, engine: str) -> None:
        """Raise :class:`PrecisionUnavailable` unless ``precision`` has hardware support here (fp32 always has)."""
        if precision == "bf16" and not self.bf16:
            raise PrecisionUnavailable(
                f"{engine} bf16 needs a CPU with AVX512_BF16 or AMX-BF16; this one has {self.summary()}. Without "
                "them bf16 is emulated or silently run in fp32: use precision='fp32', or 'int8' (a model "
                "quantized by export/quantize.py)")


def _cpuinfo_flags(path: str = CPUINFO) -> list[str] | None:
    """The first ``flags`` line of ``/proc/cpuinfo`` (x86), or None where there is none."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].split()
    except OSError:
        return None
    return None


def _openvino_isa() -> CpuIsa | None:
    """From OpenVINO's CPU capabilities (BF16 / INT8 / FP32 ...): coarser, but portable."""
    try:
        import openvino as ov

        caps = set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # not installed, or no CPU plugin: the caller reports "unknown"
        return None
    # OpenVINO lists INT8 on every x86 CPU (emulated without VNNI), so it says nothing about VNNI here
    return CpuIsa(avx2=False, avx512=False, vnni=False, bf16="BF16" in caps, amx=False, source="openvino")


@lru_cache(maxsize=1)
def cpu_isa() -> CpuIsa:
    """This machine's CPU, detected once per process."""
    flags = _cpuinfo_flags()
    if flags is not None:
        return CpuIsa.from_flags(flags)
    return _openvino_isa() or CpuIsa(False, False, False, False, False, source="unknown")


if __name__ == "__main__":
    print(cpu_isa().summary())
