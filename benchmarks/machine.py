"""What the numbers were measured on, and how fast that machine multiplies matrices.

A latency means little without the machine: CPU model, cores, the threads torch and ONNX Runtime may
use, the GPU, the library versions and the load average (other processes on a 2-core box move every
figure). The matrix-multiply rate, measured in the same run, turns the model's FLOPs into a floor.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import time
from dataclasses import dataclass, field

import torch

from coreba.engines.isa import cpu_isa

# label -> the distributions that provide it (read from package metadata: nothing is imported, so e.g.
# triton is not imported before TRITON_INTERPRET is decided, and a broken CUDA library cannot stop the run)
LIBRARIES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",), "onnx": ("onnx",), "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"), "triton": ("triton",),
    "tritonclient": ("tritonclient",), "pytriton": ("nvidia-pytriton",), "matplotlib": ("matplotlib",),
    "openvino": ("openvino",), "nncf": ("nncf",),
}


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), else whatever ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (a container or taskset can give fewer than ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def library_versions() -> dict[str, str | None]:
    """Version of each optional library, ``None`` where it is not installed."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__,
                                       "torch_cuda": torch.version.cuda}
    for label, distributions in LIBRARIES.items():
        versions[label] = None
        for dist in distributions:
            try:
                versions[label] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


@dataclass
class Machine:
    cpu: str
    cpu_count: int
    usable_cores: int
    torch_threads: int
    gpu: str | None
    gpu_memory_gb: float | None
    platform: str
    versions: dict[str, str | None]
    load_average_start: list[float] | None
    load_average_end: list[float] | None = None
    cpu_isa: str = ""  # AVX2 / AVX-512 / VNNI / BF16 / AMX, from coreba.engines.isa


def describe_machine(device: torch.device) -> Machine:
    gpu = gpu_mem = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu, gpu_mem = props.name, round(props.total_memory / 2**30, 1)
    return Machine(cpu=cpu_model(), cpu_count=os.cpu_count() or 1, usable_cores=usable_cores(),
                   torch_threads=torch.get_num_threads(), gpu=gpu, gpu_memory_gb=gpu_mem,
                   platform=platform.platform(), versions=library_versions(), load_average_start=load_average(),
                   cpu_isa=cpu_isa().summary())


# ----------------------------------------------------------------------------------- matmul rate


@dataclass
class MatmulRate:
    """Measured dense GEMM throughput of one precision: the best this machine does on an ideal shape."""

    precision: str  # fp32 | tf32 | fp16
    size: int  # n of the n x n x n GEMM
    median_ms: float
    best_ms: float
    tflops: float  # from the best run: a floor must not be raised by a noisy neighbour

    @classmethod
    def of(cls, precision: str, n: int, times_ms: list[float]) -> MatmulRate:
        best = min(times_ms)
        return cls(precision, n, statistics.median(times_ms), best, 2 * n**3 / (best * 1e-3) / 1e12)


@dataclass
class MachineRates:
    rates: dict[str, MatmulRate] = field(default_factory=dict)

    def tflops(self, precision: str) -> float:
        """The rate a ``precision`` engine is held to: fp16 engines to the fp16 GEMM, all else to strict fp32."""
        key = precision if precision in self.rates else "fp32"
        return self.rates[key].tflops

    def merge(self, other: MachineRates) -> MachineRates:
        """Keep the faster measurement of each precision (the run measures at its start and at its end)."""
        for name, rate in other.rates.items():
            if name not in self.rates or rate.tflops > self.rates[name].tflops:
                self.rates[name] = rate
        return self


def _time_gemm(a: torch.Tensor, b: torch.Tensor, runs: int) -> list[float]:
    """Milliseconds of each of ``runs`` calls of ``a @ b`` (CUDA events on a GPU, perf_counter on the CPU)."""
    out = torch.empty(a.shape[0], b.shape[1], dtype=a.dtype, device=a.device)
    for _ in range(2 if a.is_cuda else 1):
        torch.mm(a, b, out=out)
    times = []
    if a.is_cuda:
        torch.cuda.synchronize(a.device)
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.mm(a, b, out=out)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(runs):
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def measure_matmul(device: torch.device, quick: bool) -> MachineRates:
    """GEMM rate per precision: 2048^3 fp32 (and bf16 where the CPU has it) on the CPU; 8192^3 fp32 (strict),
    tf32 and fp16 on a GPU.

    Why these: the fp32 engines run strict fp32 (``float32_matmul_precision("highest")``, the setting
    their 1e-4 parity needs), so strict fp32 is their ceiling; fp16 engines are held to the fp16 rate;
    tf32 is recorded to show what relaxing fp32 would buy. The rate is that of the fastest run.
    """
    rates = MachineRates()
    if device.type == "cuda":
        n, plan = 8192, (("fp32", torch.float32, False), ("tf32", torch.float32, True), ("fp16", torch.float16, False))
        runs = 10 if quick else 20
    else:
        n, plan, runs = 2048, (("fp32", torch.float32, False),), (4 if quick else 10)
        if cpu_isa().bf16:  # the ceiling of the bf16 engines (int8 rows are held to fp32's: no int8 GEMM here)
            plan += (("bf16", torch.bfloat16, False),)
    g = torch.Generator(device=device).manual_seed(0)
    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, dtype, tf32 in plan:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            a = torch.randn(n, n, device=device, generator=g).to(dtype)
            b = torch.randn(n, n, device=device, generator=g).to(dtype)
            rates.rates[name] = MatmulRate.of(name, n, _time_gemm(a, b, runs))
            del a, b
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return rates
