"""System shared memory between a client and a server on the same host (``tritonclient.utils.shared_memory``).

A query's video features are 75 x 2818 float32 = 845 KB: over HTTP or gRPC they are serialized, copied
through the socket and deserialized by the server. With shared memory the client writes them once into a
region the server maps, and the request carries only (region, offset, size); the answer comes back the same
way. Only for a client on the server's host (the region is a file in ``/dev/shm``).

:class:`SharedMemoryIO` owns two regions per client (inputs, outputs), sized for the largest request so far
(grown, never shrunk), registered with the server under names unique to the client. One request at a time:
the regions are reused by the next request, so a client that sends requests concurrently needs one
:class:`SharedMemoryIO` per request in flight.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from types import ModuleType

import numpy as np
import tritonclient.utils.shared_memory as shm

ALIGN = 64  # bytes: each tensor starts on a cache line
_serial = itertools.count()


def _aligned(size: int) -> int:
    return (size + ALIGN - 1) // ALIGN * ALIGN


class _Region:
    """One registered region: its handle, Triton name and size."""

    def __init__(self, client, name: str, byte_size: int) -> None:
        self.client, self.name, self.byte_size = client, name, byte_size
        self.key = f"/{name}"
        self.handle = shm.create_shared_memory_region(name, self.key, byte_size, create_only=True)
        try:
            client.register_system_shared_memory(name, self.key, byte_size)
        except Exception:
            shm.destroy_shared_memory_region(self.handle)
            raise

    def close(self) -> None:
        try:
            self.client.unregister_system_shared_memory(self.name)
        finally:
            shm.destroy_shared_memory_region(self.handle)


class SharedMemoryIO:
    """Puts a request's inputs and outputs in system shared memory (see the module docstring)."""

    def __init__(self, client, module: ModuleType, output_specs: Mapping[str, tuple[np.dtype, Sequence[int]]]) -> None:
        """``client`` of protocol ``module``; ``output_specs``: each output's dtype and shape without the batch."""
        self.client, self.module = client, module
        self.output_specs = {name: (np.dtype(dtype), tuple(dims)) for name, (dtype, dims) in output_specs.items()}
        self.prefix = f"coreba_{os.getpid()}_{next(_serial)}"
        self.regions: dict[str, _Region] = {}
        self._outputs: dict[str, tuple[int, tuple[int, ...]]] = {}  # name -> (offset, shape) of the last request

    def _region(self, kind: str, byte_size: int) -> _Region:
        region = self.regions.get(kind)
        if region is None or region.byte_size < byte_size:
            if region is not None:
                region.close()
            self.regions[kind] = region = _Region(self.client, f"{self.prefix}_{kind}", byte_size)
        return region

    def bind(self, inputs: Sequence, arrays: Mapping[str, np.ndarray], outputs: Sequence) -> None:
        """Copy ``arrays`` into the input region and point each ``InferInput`` at its bytes; point each
        ``InferRequestedOutput`` at its place in the output region."""
        offsets, total = {}, 0
        for tensor in inputs:
            offsets[tensor.name()] = total
            total += _aligned(arrays[tensor.name()].nbytes)
        region = self._region("inputs", total)
        for tensor in inputs:
            array = np.ascontiguousarray(arrays[tensor.name()])
            shm.set_shared_memory_region(region.handle, [array], offset=offsets[tensor.name()])
            tensor.set_shared_memory(region.name, array.nbytes, offsets[tensor.name()])
        batch = next(iter(arrays.values())).shape[0]
        self._outputs, total = {}, 0
        for name, (dtype, dims) in self.output_specs.items():
            self._outputs[name] = (total, (batch, *dims))
            total += _aligned(int(np.prod((batch, *dims))) * dtype.itemsize)
        region = self._region("outputs", total)
        for requested in outputs:
            offset, shape = self._outputs[requested.name()]
            size = int(np.prod(shape)) * self.output_specs[requested.name()][0].itemsize
            requested.set_shared_memory(region.name, size, offset)

    def read(self) -> dict[str, np.ndarray]:
        """The last request's outputs, copied out of the region (the next request overwrites it)."""
        region = self.regions["outputs"]
        return {name: shm.get_contents_as_numpy(region.handle, self.output_specs[name][0], shape, offset).copy()
                for name, (offset, shape) in self._outputs.items()}

    def close(self) -> None:
        """Unregister and destroy the regions (the server keeps no mapping of them)."""
        regions, self.regions = list(self.regions.values()), {}
        for region in regions:
            region.close()
