"""COREBA: Coarse-to-Fine Recurrently Aligned Transformer with Balance Tokens (video moment retrieval and
highlight detection), with exact QVHighlights evaluation, ONNX/TensorRT export and serving."""

from coreba.config import CorebaConfig, LossConfig, TrainConfig
from coreba.model import CheckpointError, Coreba, InputError
from coreba.predictor import Predictor

__all__ = ["CheckpointError", "Coreba", "CorebaConfig", "InputError", "LossConfig", "Predictor", "TrainConfig"]
__version__ = "0.1.0"
