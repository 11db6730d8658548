"""The TensorRT code checked statically against TensorRT's typed API description, without TensorRT.

mypy reads ``tensorrt-stubs`` (TensorRT 10.x; installed by scripts/setup.sh into ``.venv/trt-stubs``, see
scripts/install_trt_stubs.py) and checks every call of coreba/engines/tensorrt_engine.py,
export/tensorrt_build.py and export/to_tensorrt.py ([tool.mypy] in pyproject.toml). The second test
proves the check is not vacuous: misspelt calls injected into copies of those files must be reported.
No typed description of TensorRT 11.x exists; tests/export/test_tensorrt_versions.py covers 11.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUBS = Path(os.environ.get("COREBA_TRT_STUBS", Path(sys.prefix) / "trt-stubs"))


@pytest.fixture(scope="module")
def mypy(tmp_path_factory):
    """Run mypy (the project's config) with the stubs on MYPYPATH; fail, not skip, when either is missing:
    both are dev dependencies that scripts/setup.sh installs, and a skip would hide the check in CI."""
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.fail("mypy is not installed: run scripts/setup.sh (it is in the dev extra)")
    if not (STUBS / "tensorrt" / "__init__.pyi").is_file():
        pytest.fail(f"no TensorRT stubs at {STUBS}: run `python scripts/install_trt_stubs.py {STUBS}` "
                    "(scripts/setup.sh does) or set COREBA_TRT_STUBS")
    cache = tmp_path_factory.mktemp("mypy_cache")

    def run(*paths: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "MYPYPATH": str(STUBS)}
        return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                               "--cache-dir", str(cache), *paths], capture_output=True, text=True, cwd=ROOT,
                              env=env, timeout=300)

    return run


def test_tensorrt_code_type_checks_against_the_stubs(mypy):
    result = mypy()  # the files listed in [tool.mypy]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues found in 3 source files" in result.stdout


MUTANTS = {  # file -> [(original, misspelt, what mypy must say)]
    "export/tensorrt_build.py": [
        ("config.set_flag(builder_flag(name))", "config.set_flags(builder_flag(name))", '"set_flags"'),
        ('"TF32": lambda: trt.BuilderFlag.TF32', '"TF32": lambda: trt.BuilderFlag.TF23', '"TF23"'),
        ("parser.parse_from_file(str(onnx_path))", "parser.parse_from_files(str(onnx_path))", '"parse_from_files"'),
        ("builder.create_network(network_flags(plan))", "builder.create_network(network_flags(plan), 1)",
         "create_network"),
    ],
    "coreba/engines/tensorrt_engine.py": [
        ("range(engine.num_io_tensors)", "range(engine.num_io_tensor)", '"num_io_tensor"'),
        ("self.context.execute_async_v3(", "self.context.execute_async_v2(", '"execute_async_v2"'),
        ("trt.TensorIOMode.INPUT", "trt.TensorIOMode.INPUTS", '"INPUTS"'),
    ],
}


def test_misspelt_calls_are_caught(mypy, tmp_path):
    paths = []
    for rel, edits in MUTANTS.items():
        text = (ROOT / rel).read_text()
        for original, misspelt, _ in edits:
            assert original in text, f"{rel} no longer contains {original!r}: update MUTANTS"
            text = text.replace(original, misspelt)
        mutant = tmp_path / ("mutant_" + Path(rel).name)
        mutant.write_text(text)
        paths.append(str(mutant))
    result = mypy(*paths)
    assert result.returncode == 1, result.stdout
    for rel, edits in MUTANTS.items():
        errors = [line for line in result.stdout.splitlines() if f"mutant_{Path(rel).name}:" in line]
        for _, misspelt, said in edits:
            assert any(said in line for line in errors), f"mypy missed {misspelt!r}:\n" + "\n".join(errors)
    assert len(re.findall(r"error:", result.stdout)) >= sum(len(e) for e in MUTANTS.values())
