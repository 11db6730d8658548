"""Progress bars that show only on a terminal: piped output (CI, log files) gets none, so logs hold results,
not thousands of redrawn bars."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress_bar(iterable: Iterable[Any] | None = None, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar; ``disable=None`` is tqdm's "off unless stderr is a TTY"."""
    return tqdm(iterable, disable=None if enabled else True, dynamic_ncols=True, **kwargs)
