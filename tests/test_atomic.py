"""The one atomic-write helper: a target is replaced only by a block that ended cleanly, never left half-written,
and no temporary survives a failure or Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import pytest

from coreba.atomic import (
    PARTIAL_TAG,
    OutputPathError,
    atomic_file,
    check_output_path,
    replace_directory,
    staging_directory,
)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_clean_block_replaces_the_target(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("old")
    with atomic_file(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".onnx" and PARTIAL_TAG in tmp.name
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible until the block ends
    assert target.read_text() == "new" and _listing(tmp_path) == ["model.onnx"]


@pytest.mark.parametrize("error", [ValueError("a check failed"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_block_keeps_the_old_file_and_no_temporary(tmp_path, error):
    target = tmp_path / "model.onnx"
    target.write_text("old")
    with pytest.raises(type(error)), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise error
    assert target.read_text() == "old" and _listing(tmp_path) == ["model.onnx"]


def test_a_block_that_wrote_nothing_is_an_error(tmp_path):
    with pytest.raises(OutputPathError, match="nothing was written"), atomic_file(tmp_path / "x.bin"):
        pass
    assert _listing(tmp_path) == []


def test_replace_directory_swaps_a_folder_and_staging_leaves_nothing(tmp_path):
    target = tmp_path / "repo"
    (target / "old").mkdir(parents=True)
    with staging_directory(target) as stage:
        (stage / "new").mkdir()
        (stage / "new" / "f").write_text("1")
        replace_directory(stage / "new", target)
    assert _listing(target) == ["f"] and _listing(tmp_path) == ["repo"]


@pytest.mark.parametrize("case", ["a folder", "under a file", "a file for a folder"])
def test_unwritable_output_paths_are_refused_in_one_line(tmp_path, case):
    (tmp_path / "file").write_text("x")
    target, kind = {"a folder": (tmp_path, "file"), "under a file": (tmp_path / "file" / "m.onnx", "file"),
                    "a file for a folder": (tmp_path / "file", "dir")}[case]
    with pytest.raises(OutputPathError) as err:
        check_output_path(target, kind)
    assert str(target) in str(err.value) and "\n" not in str(err.value)
    assert _listing(tmp_path) == ["file"]  # the probe is gone
