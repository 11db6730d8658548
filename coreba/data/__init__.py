"""QVHighlights-format data: the dataset and batching QD-DETR uses.

The synthetic stand-in for the features is :mod:`coreba.data.synthetic`; it is not imported here so that
``python -m coreba.data.synthetic`` runs it as a fresh module.
"""

from coreba.data.qvhighlights import (
    AnnotationError,
    DataConfig,
    FeatureFileError,
    QVHighlightsDataset,
    collate_batch,
    collate_samples,
    load_annotations,
    write_annotations,
)

__all__ = [
    "AnnotationError",
    "DataConfig",
    "FeatureFileError",
    "QVHighlightsDataset",
    "collate_batch",
    "collate_samples",
    "load_annotations",
    "write_annotations",
]
