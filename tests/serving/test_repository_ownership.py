"""build_repository checks everything before writing anything, and replaces only what it wrote: a user's file in a
coreba folder, an invalid foreign model, an output path that is a file, a truncated ONNX file: each is a named
error (one line from the CLI) with the output folder left exactly as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.baseline import BASELINE_ENGINE, BASELINE_MODELS
from serving.build_repository import build_repository, main
from serving.config_check import ConfigCheckError
from serving.repository_marker import MARKER_NAME, NotOursError, read_marker
from serving.spec import ALL_MODELS, ENGINE_MODELS, ONNX_FILENAME, SERVED, WARMUP_FOLDER


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (and beside it) with its content: what 'left exactly as it was' compares."""
    return {p.relative_to(folder.parent).as_posix(): p.read_bytes() for p in sorted(folder.parent.rglob("*"))
            if p.is_file()}


def test_files_it_did_not_write_are_never_replaced_without_force(served_model, tmp_path):
    out = tmp_path / "repo"
    notes = out / ENGINE_MODELS["python"] / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    before = _tree(out)
    with pytest.raises(NotOursError, match=r"notes\.txt \(not written by build_repository\).*--force"):
        build_repository(served_model.onnx_path, out)
    assert _tree(out) == before

    build_repository(served_model.onnx_path, out, force=True)
    assert not notes.exists() and (out / MARKER_NAME).is_file()
    build_repository(served_model.onnx_path, out)  # its own, unchanged files: replaced without --force

    config = out / SERVED / "config.pbtxt"
    config.write_text(config.read_text() + "\n# tuned by hand\n")
    (out / SERVED / "2").mkdir()
    before = _tree(out)
    with pytest.raises(NotOursError, match=r"2 entries .*coreba/2 \(not written.*config\.pbtxt \(changed since"):
        build_repository(served_model.onnx_path, out)
    assert _tree(out) == before


def test_the_servers_bytecode_cache_is_not_a_users_file(served_model, tmp_path):
    """A server that loaded the repository leaves ``__pycache__`` beside model.py: a rebuild replaces it freely."""
    out = tmp_path / "repo"
    build_repository(served_model.onnx_path, out)
    cache = out / SERVED / "1" / "__pycache__" / "model.cpython-311.pyc"
    cache.parent.mkdir()
    cache.write_bytes(b"bytecode stand-in")
    build_repository(served_model.onnx_path, out)
    assert not cache.exists()


def test_a_stale_model_it_wrote_is_removed(served_model, tmp_path):
    out = tmp_path / "repo"
    plan = tmp_path / "coreba.plan"
    plan.write_bytes(b"serialized engine stand-in")
    build_repository(served_model.onnx_path, out, plan_path=plan)
    assert (out / ENGINE_MODELS["trt"]).is_dir()
    build_repository(served_model.onnx_path, out)
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER_NAME, *set(ALL_MODELS) - {ENGINE_MODELS["trt"]}])


def test_the_marker_records_every_file_and_the_baseline_and_old_layout_are_its_own(served_model, tmp_path):
    """Warm-up data and the --baseline models are recorded like the rest; a later build without --baseline removes
    them; a folder of the old two-step layout is coreba's too: refused when not recorded, removed with --force."""
    out = tmp_path / "repo"
    build_repository(served_model.onnx_path, out, baseline_onnx=served_model.raw_onnx_path)
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*")  # files, and empty folders (the ensemble's "1")
               if p.name != MARKER_NAME and (p.is_file() or not any(p.iterdir()))}
    assert set(read_marker(out)) == on_disk
    assert {f"{SERVED}/{WARMUP_FOLDER}/video_feats", f"{BASELINE_ENGINE}/1/{ONNX_FILENAME}"} <= on_disk
    build_repository(served_model.onnx_path, out)
    assert not any((out / name).exists() for name in BASELINE_MODELS)
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER_NAME, *set(ALL_MODELS) - {ENGINE_MODELS["trt"]}])

    legacy = out / "coreba_postprocess" / "config.pbtxt"  # left by a build of the old layout, not recorded
    legacy.parent.mkdir()
    legacy.write_text('name: "coreba_postprocess"\n')
    before = _tree(out)
    with pytest.raises(NotOursError, match=r"coreba_postprocess/config\.pbtxt \(not written by build_repository\)"):
        build_repository(served_model.onnx_path, out)
    assert _tree(out) == before
    build_repository(served_model.onnx_path, out, force=True)
    assert not legacy.parent.exists()


def test_an_invalid_foreign_model_is_found_before_anything_is_written(served_model, tmp_path):
    out = tmp_path / "repo"
    (out / "other").mkdir(parents=True)
    (out / "other" / "config.pbtxt").write_text('name: "other"\nmax_batchsize: 4\n')
    before = _tree(out)
    with pytest.raises(ConfigCheckError, match=r"other/config\.pbtxt: not a valid Triton ModelConfig"):
        build_repository(served_model.onnx_path, out)
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


@pytest.mark.parametrize("case", ["output is a file", "truncated onnx", "foreign marker"])
def test_cli_errors_are_one_line_and_write_nothing(served_model, tmp_path, capsys, case):
    onnx_path, out = served_model.onnx_path, tmp_path / "repo"
    if case == "output is a file":
        out.write_text("not a folder")
        named = str(out)
    elif case == "truncated onnx":
        onnx_path = tmp_path / "cut.onnx"
        data = served_model.onnx_path.read_bytes()
        onnx_path.write_bytes(data[: len(data) // 2])
        named = f"{onnx_path} is not a valid ONNX model"
    else:
        out.mkdir()
        (out / MARKER_NAME).write_text("{}")
        named = str(out / MARKER_NAME)
    before = _tree(out)
    assert main(["--onnx", str(onnx_path), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and named in err, err
    assert _tree(out) == before
