"""Write an artifact so that an interrupted or refused run never destroys the good file it would replace.

The artifact is written to a temporary name beside the target (same folder, so same filesystem: ``os.replace`` is
an atomic rename), checked there, and moved onto the target only when the ``with`` block ends without an error;
on an error the temporary files are removed and the target is untouched.

A LOCAL helper: a shared atomic-write helper is being written elsewhere in the project; this one is meant to be
replaced by it when the branches meet, so it is kept in this one place and used through :func:`atomic_output`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path


def _temporary_twin(target: Path) -> Path:
    """A name beside ``target`` that keeps its suffix (OpenVINO finds an IR's ``.bin`` from its ``.xml`` name)."""
    return target.with_name(f".{target.stem}.tmp{os.getpid()}{target.suffix}")


@contextlib.contextmanager
def atomic_output(target: str | Path, companions: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a temporary path to write ``target`` to; on success move it (and each companion file named by a
    suffix, e.g. ``".bin"`` beside an OpenVINO ``.xml``) onto the target's name.

    With companions, the target itself is removed first and moved in last: a reader sees the old complete set,
    no target, or the new complete set, never a new ``.bin`` under an old ``.xml``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_twin(target)
    pending = [tmp, *(tmp.with_suffix(suffix) for suffix in companions)]
    try:
        yield tmp
        missing = [str(p) for p in pending if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"nothing was written to {missing}; {target} is left as it was")
        if companions:
            target.unlink(missing_ok=True)
            for suffix in companions:
                os.replace(tmp.with_suffix(suffix), target.with_suffix(suffix))
        os.replace(tmp, target)
    finally:
        for path in pending:
            path.unlink(missing_ok=True)
