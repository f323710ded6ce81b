"""The README's Python snippet and every script in examples/ run, so the docs cannot rot."""
import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_readme_python_snippets_run():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks, "the README should show the Python API"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_readme_opens_with_the_two_commands():
    first = (ROOT / "README.md").read_text().split("```bash\n", 1)[1].split("```")[0].splitlines()
    assert first[0].strip() == "python -m pip install -e '.[data]' && refbnn demo"
    assert first[1].strip() == "python -m pip install -e '.[test]' && pytest -q"
    assert "pytest -q" in (ROOT / ".ci" / "run").read_text().splitlines()[-1]


@pytest.mark.parametrize("script", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_example_runs(script, capsys):
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out.strip()
