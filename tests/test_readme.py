"""README's Python examples run as written (blocks fenced with ```python)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = BLOCKS[index]
    if "# readme: slow" in code:
        pytest.skip("long-running example (run by hand)")
    exec(compile(code, f"README.md[python block {index}]", "exec"), {"__name__": "__readme__"})
