"""Write an artifact so that no reader ever sees it half-written or unchecked: the ONE implementation.

Every artifact writer of the project goes through here: ONNX files and their optimized copies
(``export/onnx_export.py``), checkpoints (``Coreba.save_pretrained``), the training state, TensorRT plans
and their sidecars (``export/tensorrt_build.py``) and the serving repository (``serving/build_repository.py``).

The new content is written under a fresh hidden name beside the target (same folder, so the same file
system and the final rename is atomic), checked there by the caller, and moved into place with
``os.replace`` only when the ``with`` block ends without an exception. On any exception (a failed check,
Ctrl-C's ``KeyboardInterrupt``, ``SystemExit``) the temporary is removed and the target keeps its
previous content. Only SIGKILL or a power cut can leave a temporary behind, and it is never the target:
its name holds :data:`PARTIAL_TAG`.

    with atomic_file("artifacts/coreba.onnx") as tmp:
        onnx.save(proto, tmp)
        check(tmp)            # raises: artifacts/coreba.onnx is untouched, tmp is gone
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

PARTIAL_TAG = ".partial-"  # in the name of every temporary this module creates


class OutputPathError(OSError):
    """An output path that cannot be written (a folder where a file is wanted, a read-only folder, ...)."""


def partial_path(target: str | Path) -> Path:
    """A fresh hidden name beside ``target`` that keeps its suffix (tools that read the extension still work)."""
    target = Path(target)
    return target.with_name(f".{target.stem}{PARTIAL_TAG}{os.getpid()}-{secrets.token_hex(4)}{target.suffix}")


def check_output_path(target: str | Path, kind: str = "file") -> Path:
    """Fail at once, with a one-line :class:`OutputPathError`, where ``target`` cannot be written.

    Checked before any expensive work (an export traces for ~30 s): ``target`` is not a folder when a file is
    wanted (nor a file when a folder is), its parent is (or can be made) a folder, and a file can really be
    created there (a probe, created and removed: permission bits do not tell about read-only mounts or root).
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    target = Path(target)
    if kind == "file" and target.is_dir():
        raise OutputPathError(f"output {target} is a folder; give a file path")
    if kind == "dir" and target.exists() and not target.is_dir():
        raise OutputPathError(f"output {target} is a file; give a folder path")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputPathError(f"cannot create the folder {parent} for {target}: {err.strerror or err}") from None
    folders = [parent, target] if kind == "dir" and target.is_dir() else [parent]  # a folder's content is replaced
    for folder in folders:
        probe = partial_path(folder / target.name)
        try:
            probe.touch(exist_ok=False)
        except OSError as err:
            raise OutputPathError(f"cannot write {target}: {folder} is not writable ({err.strerror or err})") \
                from None
        probe.unlink()
    return target


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk, so a rename never exposes unwritten blocks."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # a file system without folder descriptors: the rename is still atomic
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(target: str | Path, companions: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` to write and check; it replaces ``target`` when the block ends
    without an exception, and is removed otherwise (``target`` then keeps its previous content).

    ``companions``: suffixes of files written beside the temporary path under its stem (an OpenVINO IR's ``.bin``
    beside its ``.xml``: OpenVINO finds one from the other's name). They move first and ``target`` last, after
    the old ``target`` is removed: a reader sees the old complete set, no target, or the new complete set, never
    a new ``.bin`` under an old ``.xml``.
    """
    target = Path(target)
    tmp = partial_path(target)
    pending = [tmp, *(tmp.with_suffix(suffix) for suffix in companions)]
    try:
        yield tmp
        missing = [str(path) for path in pending if not path.is_file()]
        if missing:
            raise OutputPathError(f"nothing was written for {target} ({', '.join(missing)} missing); it is left as "
                                  "it was")
        for path in pending:
            _fsync(path)
        if companions:
            target.unlink(missing_ok=True)
            for suffix in companions:
                os.replace(tmp.with_suffix(suffix), target.with_suffix(suffix))
        os.replace(tmp, target)
        _fsync(target.parent)
    finally:
        for path in pending:
            _remove(path)  # gone already after a successful replace


@contextlib.contextmanager
def staging_directory(target: str | Path) -> Iterator[Path]:
    """A fresh empty folder beside ``target`` for building what will replace it (or parts of it) with
    :func:`replace_directory`; removed with whatever is left in it when the block ends, however it ends."""
    tmp = partial_path(target)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    finally:
        _remove(tmp)


def replace_directory(source: str | Path, target: str | Path, aside: str | Path | None = None) -> None:
    """Move the folder ``source`` to ``target`` (same file system). An existing ``target`` is first renamed
    to ``aside`` (default: a temporary beside it) and deleted only once ``source`` is in place, so no moment
    leaves neither of them on disk."""
    source, target = Path(source), Path(target)
    _fsync(source)
    if not target.exists():
        os.replace(source, target)
    else:
        old = Path(aside) if aside is not None else partial_path(target)
        os.replace(target, old)
        try:
            os.replace(source, target)
        except BaseException:
            os.replace(old, target)
            raise
        _remove(old)
    _fsync(target.parent)
