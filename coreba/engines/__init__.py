"""Engines: one ``run(feeds) -> outputs`` interface (numpy in, numpy out) over every way to execute COREBA.

Everything before an engine (validation, padding) and after it (post-processing) is shared, which is what
makes the parity harness and the :class:`coreba.predictor.Predictor` engine-agnostic.
"""

from coreba.engines.base import Engine, EngineUnavailable
from coreba.engines.factory import ENGINE_NAMES, ENGINE_PRECISIONS, load_engine, model_file_metadata

__all__ = ["ENGINE_NAMES", "ENGINE_PRECISIONS", "Engine", "EngineUnavailable", "load_engine", "model_file_metadata"]
