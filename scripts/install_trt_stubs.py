"""Install the typed description of TensorRT 10.x (``tensorrt-stubs``) where only mypy looks, and repair it.

    python scripts/install_trt_stubs.py [TARGET]        # default: .venv/trt-stubs

Why a folder of its own: ``tensorrt-stubs`` ships ``tensorrt/__init__.pyi`` without an ``__init__.py``;
installed into site-packages, ``import tensorrt`` would then succeed as an empty namespace package on a
machine without TensorRT. mypy finds it through ``MYPYPATH`` instead (tests/export/test_tensorrt_static.py).

Why a repair: the generated stubs (10.13.0.35.1) are not all valid Python, and mypy stops at the first
syntax error: four plugin methods name a parameter ``in`` (a keyword), one signature puts a parameter
without a default after defaulted ones, and ``tensorrt/__init__.pyi`` imports ``tensorrt_libs``, which has no
stub. None of these touch the API coreba calls. Each fix must apply exactly as often as expected, so a new
stubs release is not patched blindly (the script fails and says which fix no longer fits).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

STUBS = "tensorrt-stubs==10.13.0.35.1"
FIXES = [  # (file, old, new, expected count)
    ("tensorrt_bindings/tensorrt.pyi", "(self, in: ", "(self, in_: ", 1),
    ("tensorrt_bindings/tensorrt.pyi", "(self: IPluginV3, in: ", "(self: IPluginV3, in_: ", 3),
    ("tensorrt_bindings/tensorrt.pyi", "power: Weights = None, channel_axis: int)",
     "power: Weights = None, channel_axis: int = ...)", 1),
]


def install(target: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--upgrade", "--target", str(target), STUBS], check=True)
    for rel, old, new, expected in FIXES:
        path = target / rel
        text = path.read_text()
        found = text.count(old)
        if found != expected and text.count(new) == expected:
            continue  # already repaired
        if found != expected:
            raise SystemExit(f"{path}: expected {expected} x {old!r}, found {found}: the stubs changed; review FIXES")
        path.write_text(text.replace(old, new))
    libs = target / "tensorrt_libs" / "__init__.pyi"  # the package of TensorRT's shared libraries: no API
    libs.parent.mkdir(exist_ok=True)
    libs.write_text("")
    print(f"{STUBS} installed and repaired in {target}")


if __name__ == "__main__":
    install(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / ".venv" / "trt-stubs")
