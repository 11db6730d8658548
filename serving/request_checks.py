"""What the served model checks in a request, in numpy, before the engine runs.

Triton's own checks come first and name the problem themselves: input names, dtypes (FP32 features, BOOL
masks), shapes at the padded maxima, one batch size over all inputs, the batch bound. What is left is about
values, which only the model can see: each query needs a valid clip and a valid token (an engine given an
empty mask would produce a fully masked attention row), a finite positive duration, and finite features (NaN
or Inf would reach the answer). A few tens of microseconds a query, on the arrays as they arrive (views of
the request's memory, never converted).

These are the checks the engine model (``coreba.model.validation``) and the post-processing model
(``check_answerable``) made before issue 12, moved into the one model that now answers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from coreba.model.validation import InputError, check_masks_not_empty
from serving.spec import DURATION


def check_request(arrays: Mapping[str, np.ndarray]) -> None:
    """Raise :class:`coreba.model.validation.InputError` naming the first problem of a (B-query) request."""
    check_masks_not_empty(arrays["video_mask"], arrays["text_mask"])
    duration = arrays[DURATION].reshape(-1)
    if not (np.isfinite(duration).all() and (duration > 0).all()):
        raise InputError(f"duration must be finite and positive (seconds), got {duration.tolist()}")
    for name in ("video_feats", "text_feats"):
        if not np.isfinite(arrays[name]).all():
            raise InputError(f"{name} contains NaN or Inf values")
