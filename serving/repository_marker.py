"""What ``build_repository`` wrote into a model repository, so that it never overwrites anything else.

A repository may hold other models beside coreba's, and a user may keep files inside coreba's folders; the
builder replaces only files it wrote and that are unchanged since. It records them in a marker at the
repository's root (``.coreba_repository.json``: each file's path and SHA-256); Triton only loads folders, so
the file is invisible to the server.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from coreba.atomic import atomic_file

MARKER_NAME = ".coreba_repository.json"
MARKER_TOOL = "serving/build_repository.py"


class NotOursError(ValueError):
    """The repository holds, where the builder would write, something the builder did not write."""


def fingerprint(path: Path) -> str:
    """SHA-256 of a file's content; "folder" for an empty folder, "link" for a symbolic link."""
    if path.is_symlink():
        return "link"
    if path.is_dir():
        return "folder"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


BYTECODE_CACHE = "__pycache__"  # the server's Python writes it beside model.py: derived from our file, not data


def files_under(root: Path, folders: Iterable[str]) -> dict[str, Path]:
    """Every entry (files, links, empty folders) under ``root/<folder>``, keyed by its path relative to ``root``;
    Python's bytecode caches aside (a server that loaded the repository leaves them; they are rebuilt at will)."""
    found = {}
    for name in folders:
        top = root / name
        if not top.exists() and not top.is_symlink():
            continue
        entries = [top] if top.is_symlink() or not top.is_dir() else [p for p in top.rglob("*")]
        for path in entries:
            if BYTECODE_CACHE in path.relative_to(root).parts:
                continue
            if path.is_dir() and not path.is_symlink() and any(path.iterdir()):
                continue  # a folder is accounted for by what it holds
            found[path.relative_to(root).as_posix()] = path
    return found


def fingerprints(root: Path, folders: Iterable[str]) -> dict[str, str]:
    """path relative to ``root`` -> :func:`fingerprint` of every entry under the given folders of ``root``."""
    return {rel: fingerprint(path) for rel, path in files_under(root, folders).items()}


def read_marker(repository: Path) -> dict[str, list[str]]:
    """path -> fingerprints of the versions the builder wrote there (empty: no marker, nothing is ours)."""
    path = repository / MARKER_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        if data.get("tool") != MARKER_TOOL or not isinstance(files, dict):
            raise ValueError("not written by " + MARKER_TOOL)
        return {str(k): [str(d) for d in v] for k, v in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise NotOursError(f"{path} is not a marker this builder wrote ({err}); move it away or pass --force") \
            from None


def write_marker(repository: Path, files: Mapping[str, Iterable[str]]) -> None:
    """Record ``files`` (path -> fingerprints) atomically."""
    payload = {"tool": MARKER_TOOL, "files": {k: sorted(set(v)) for k, v in sorted(files.items())}}
    with atomic_file(repository / MARKER_NAME) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")


def not_ours(repository: Path, folders: Iterable[str], marker: Mapping[str, list[str]]) -> list[str]:
    """Entries under ``repository/<folder>`` the builder did not write, or that changed since it did."""
    problems = []
    for rel, path in sorted(files_under(repository, folders).items()):
        if rel not in marker:
            problems.append(f"{path} (not written by build_repository)")
        elif fingerprint(path) not in marker[rel]:
            problems.append(f"{path} (changed since build_repository wrote it)")
    return problems
