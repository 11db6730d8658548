from coreba.model.coreba import CheckpointError, Coreba
from coreba.model.validation import InputError, validate_inputs

__all__ = ["CheckpointError", "Coreba", "InputError", "validate_inputs"]
