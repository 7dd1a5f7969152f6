"""Every script in benchmarks/ imports: a rename in the package must not leave a benchmark that
fails at its first line (quickstart_track.py once imported a name that had moved)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


def test_the_scripts_are_found() -> None:
    assert len(SCRIPTS) >= 20, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_benchmark_script_imports(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Scripts import their siblings (decode_vs_llamacpp, ...) as the command line would.
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    name = f"benchmark_import_check_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)  # runs the imports; main() stays behind its __main__ guard
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
