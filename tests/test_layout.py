"""The architecture's arrows, read from the source: benchmarks -> serving -> export -> coreba -> kernels, inference
never importing training, and no import circle anywhere (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("benchmarks", "serving", "export", "coreba", "kernels")  # each may import only those to its right
INFERENCE_MODULES = ("coreba.model", "coreba.engines", "coreba.postprocess", "coreba.predictor", "coreba.predict",
                     "coreba.evaluate", "coreba.interface", "coreba.config", "coreba.data", "coreba.ops")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _project_modules() -> dict[str, Path]:
    modules = {}
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            modules[_module_name(path)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in the file (a `from pkg import sub` counts `pkg.sub` when that is a
    module). Implicit imports of parent packages are not edges: every submodule would otherwise close a circle."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _project_modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_arrows_point_down_the_layers(graph):
    wrong = []
    for module, targets in graph.items():
        rank = LAYERS.index(module.split(".")[0])
        wrong += [f"{module} -> {t}" for t in targets if LAYERS.index(t.split(".")[0]) < rank]
    assert not wrong, "imports against the layer order " + " -> ".join(LAYERS) + ":\n" + "\n".join(sorted(wrong))


def test_inference_never_imports_training(graph):
    inference = [m for m in graph if any(m == p or m.startswith(p + ".") for p in INFERENCE_MODULES)]
    wrong = [f"{m} -> {t}" for m in inference for t in graph[m] if t.startswith("coreba.training")]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle(graph):
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []
    circles = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_checker_sees_a_circle(tmp_path, monkeypatch):
    """The graph builder itself: a planted function-level circle and a wrong-way arrow are found."""
    pkg = tmp_path / "coreba"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from coreba.b import g\n")
    (pkg / "b.py").write_text("from coreba import a\nimport export.x\n")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "x.py").write_text("")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    modules = _project_modules()
    assert _imports("coreba.a", pkg / "a.py", modules) == {"coreba.b"}
    assert _imports("coreba.b", pkg / "b.py", modules) == {"coreba.a", "export.x"}
