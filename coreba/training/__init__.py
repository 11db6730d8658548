"""Training: the loop, its resumable state, data-parallel plumbing and the command line.

Inference never imports this package; training imports inference (``coreba.predict`` scores the validation
split with the same code that writes submission files).
"""

from coreba.training.train import TrainResult, train

__all__ = ["TrainResult", "train"]
