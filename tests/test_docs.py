"""The README's Python snippet and every script in examples/ run, so the docs cannot rot."""
import re
import runpy
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# A snippet that runs inside the user's own training code (it needs their model) starts
# with this line; it is compiled here, and the tests of its workflow run it with stand-ins
# (tests/test_import_torch.py, tests/test_verify_diagnosis.py).
IN_USER_CODE = "# in your "


@pytest.mark.parametrize("doc", [ROOT / "README.md", *sorted((ROOT / "docs" / "guides").glob("*.md"))],
                         ids=lambda p: p.name)
def test_python_snippets_of_the_readme_and_the_guides_run(doc):
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    assert blocks or doc.name == "reproduce.md", "the page should show the Python API"
    for block in blocks:
        block = textwrap.dedent(block)       # a snippet inside a numbered list is indented
        code = compile(block, doc.name, "exec")
        if not block.startswith(IN_USER_CODE):
            exec(code, {})


def test_readme_opens_with_the_two_commands():
    first = (ROOT / "README.md").read_text().split("```bash\n", 1)[1].split("```")[0].splitlines()
    assert first[0].strip() == "python -m pip install -e '.[data]' && refbnn demo"
    assert first[1].strip() == "python -m pip install -e '.[test]' && pytest -q"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-2:] == ["pytest -q", "pytest -q -m slow"]      # the README's command, then the slow searches


@pytest.mark.parametrize("script", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_example_runs(script, capsys):
    """Property: every example runs and prints; where its docstring shows the output
    (an indented block after `$ python examples/NAME.py`), it prints exactly that."""
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert out.strip()
    doc = script.read_text().split('"""')[1]
    shown = re.search(rf"    \$ python examples/{script.name}\n((?:    .*\n)+)", doc)
    if shown:
        assert out.splitlines() == [line[4:] for line in shown.group(1).splitlines()]


# -- links and citations --------------------------------------------------------------------

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "guides").glob("*.md")),
        *sorted((ROOT / "proofs").glob("*.md")), ROOT / "tests" / "README.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves_inside_the_repository(doc):
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text())
    local = [t for t in targets if "://" not in t]
    missing = [t for t in local if not (doc.parent / t).resolve().is_relative_to(ROOT)
               or not (doc.parent / t).exists()]
    assert missing == []


def _sections() -> set[str]:
    """Section numbers of docs/semantics.md: '1', '2', '2.1', ..."""
    return set(re.findall(r"^#+ (\d+(?:\.\d+)?)\.? ", (ROOT / "docs" / "semantics.md").read_text(), re.M))


def test_every_semantics_citation_names_an_existing_section():
    cited = set()
    for path in [*ROOT.joinpath("refbnn").rglob("*.py"), *ROOT.joinpath("tests").glob("*.py"),
                 *ROOT.joinpath("proofs").glob("*"), *DOCS]:
        for first, last in re.findall(r"semantics\.md §(\d+(?:\.\d+)?)(?:-(\d+))?", path.read_text()):
            cited |= {first} | ({last} if last else set())
    assert cited and cited <= _sections(), sorted(cited - _sections())


# Written in pieces so that this file does not match itself.
OUTSIDE = re.compile(r"\.\./" + "shared" + "|" + "SPEC" + " section" + "|" + "SPEC" + r"\.md")


def test_nothing_cites_a_file_outside_the_repository():
    offenders = [str(p.relative_to(ROOT)) for p in [*ROOT.joinpath("refbnn").rglob("*.py"), *DOCS,
                                                    *ROOT.joinpath("tests").glob("*.py")]
                 if OUTSIDE.search(p.read_text()) and p.name not in CHECKS_AGAINST_THE_PAPER]
    assert offenders == []


CHECKS_AGAINST_THE_PAPER = ("test_docs.py",)


def _backticked_paths(text: str) -> set[str]:
    """Paths written in backticks: `refbnn/x.py`, `tests/test_y.py`, `docs/z.md`, ... (a
    path of the repository's own folders; globs and placeholders are not paths)."""
    found = re.findall(r"`((?:refbnn|tests|docs|examples|benchmarks|proofs)/[A-Za-z0-9_./-]+)`", text)
    return {p.rstrip("/.") for p in found if "*" not in p and "{" not in p}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_in_backticks_exists(doc):
    """Property: a file or folder named in backticks is there (relative to the repository
    root, or to the tests folder in its own map)."""
    text = doc.read_text()
    missing = [p for p in _backticked_paths(text)
               if not (ROOT / p).exists() and not (doc.parent / p).exists()]
    assert missing == []


def test_the_tests_map_names_every_test_file():
    """Property: every file of tests/ appears in tests/README.md's map, and the map names
    no file that is gone."""
    text = (ROOT / "tests" / "README.md").read_text()
    table = text.split("## What each file proves", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([A-Za-z0-9_]+\.py)`", table))
    files = {p.name for p in (ROOT / "tests").glob("*.py")}
    assert sorted(files - named) == [] and sorted(named - files) == []



def test_the_record_of_equivalent_mutants_names_real_code():
    """Property: every row of tests/README.md's "Equivalent mutants" names a module that
    exists and a function defined in it, and its mutated line is not a line of that module
    (a row whose mutant has become the code itself, or whose module moved, is stale)."""
    mutation = runpy.run_path(str(ROOT / "benchmarks" / "mutation.py"))
    record = mutation["read_record"]()
    assert len(record) >= 9
    for module, function, line in record:
        source = (ROOT / module).read_text()
        assert re.search(rf"def {re.escape(function.split('.')[-1])}\(", source), (module, function)
        assert line not in {" ".join(s.split()) for s in source.splitlines()}, (module, line)

# -- the demo output shown in the README ------------------------------------------------------

# The models `refbnn demo` trained when the README's table was made. The demo trains on one
# BLAS thread (as the experiment runner does), so any number of cores gives these models;
# only a CPU whose BLAS kernels add in another order could train others, and then the
# table's numbers are not comparable, though its rows and columns still are.
README_DEMO_MODELS = {
    "regular.json": "f19ff0ed2e045ad17055828d6662535b4b10e8f8107a1d183007d50b13cff70c",
    "flips.json": "d171e4a71ce66014adafe7e53e046b1004911ba47b87db31750188c25739108d",
}


def test_readme_demo_output_is_what_refbnn_demo_prints(tmp_path):
    import hashlib

    from click.testing import CliRunner

    from refbnn.cli import main

    shown = (ROOT / "README.md").read_text().split("$ refbnn demo\n", 1)[1].split("```")[0].splitlines()
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    printed = result.stdout.splitlines()
    assert not any("] epoch " in line for line in printed)    # the epochs are progress: on stderr
    start = printed.index(shown[0])
    table = printed[start:start + len(shown)]
    same_models = all(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest
                      for name, digest in README_DEMO_MODELS.items())
    if same_models:
        assert table == shown
    else:   # other BLAS, other models: the same rows in the same order
        assert [line.split("  ")[0] for line in table] == [line.split("  ")[0] for line in shown]


def _documented_commands() -> dict[str, tuple[list[str], set[str]]]:
    """The command table of docs/semantics.md §9: command -> (arguments, options)."""
    text = (ROOT / "docs" / "semantics.md").read_text()
    section = text.split("## 9.", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0] != "`command`":
            name = cells[0].split("`")[1]
            rows[name] = (cells[1].split(), set(re.findall(r"`(--[a-z0-9-]+)`", cells[2])))
    return rows


def test_the_options_section_9_documents_are_the_options_the_cli_has():
    """Property: every command of the CLI has a row in §9's table, every row names a
    command, and each row lists exactly that command's arguments and options."""
    from refbnn.cli import main
    documented = _documented_commands()
    import click
    commands = {}
    for name, cmd in main.commands.items():      # a group's commands are rows of their own: `conformance run`
        commands.update({f"{name} {sub}": c for sub, c in cmd.commands.items()}
                        if isinstance(cmd, click.Group) else {name: cmd})
    actual = {name: ([(p.metavar or p.name.upper()) for p in cmd.params if p.param_type_name == "argument"],
                     {o for p in cmd.params if p.param_type_name == "option" for o in p.opts if o.startswith("--")})
              for name, cmd in commands.items()}
    actual["refbnn"] = ([], {o for p in main.params for o in p.opts if o.startswith("--")})
    assert sorted(documented) == sorted(actual)
    for name, (args, options) in actual.items():
        assert documented[name] == (args, options), name
    # the contract: every command takes --json PATH (the group itself is not a command)
    assert [n for n, (_, opts) in actual.items() if "--json" not in opts] == ["refbnn"]


def test_reports_and_the_package_agree_on_the_version():
    """refbnn.__version__ comes from the installed package's metadata (setup.cfg), and the
    experiment report prints that very string."""
    from importlib.metadata import version

    import refbnn
    from refbnn.reports.provenance import versions
    assert refbnn.__version__ == version("refbnn")
    assert versions().startswith(f"refbnn {refbnn.__version__}, Python ")


def test_a_report_records_its_command_with_paths_relative_to_its_directory(tmp_path):
    """The command in report.md names no directory of the machine it ran on: --out becomes
    the report's own directory, '.'."""
    from refbnn.reports.provenance import portable_command
    out = tmp_path / "runs" / "fig1"
    assert portable_command(["experiment", "fig1", "--out", str(out), "--jobs", "2"], out) == \
        "refbnn experiment fig1 --out . --jobs 2"
    assert portable_command(["experiment", "fig1", f"--out={out}"], out) == "refbnn experiment fig1 --out=."
    # profile also names its MODEL and DATA: written as seen from the page's folder
    model = tmp_path / "runs" / "m.json"
    assert portable_command(["profile", str(model), "d.npz", "--out", str(out)], out, paths=(str(model),)) == \
        "refbnn profile ../m.json d.npz --out ."
    for report in (ROOT / "docs").rglob("report.md"):
        command = re.search(r"Command: `([^`]*)`", report.read_text()).group(1)
        assert "/work/" not in command and " /" not in command, report


def test_the_site_builds_with_warnings_as_errors_and_runs_every_story(tmp_path):
    """The documentation site (the `docs` extra) builds with -W: every page, the API
    reference from the docstrings, and the gallery, whose every story runs during the
    build and leaves its figure."""
    pytest.importorskip("sphinx_gallery")
    pytest.importorskip("myst_parser")
    pytest.importorskip("furo")
    import shutil
    import subprocess
    import sys

    docs = tmp_path / "docs"        # a copy: the build writes the gallery into its source folder
    shutil.copytree(ROOT / "docs", docs, ignore=shutil.ignore_patterns("_build", "auto_examples"))
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    conf = (docs / "conf.py").read_text()
    (docs / "conf.py").write_text(conf.replace('ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))',
                                               f"ROOT = {str(tmp_path)!r}"))
    r = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(docs),
                        str(tmp_path / "html")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    stories = sorted(p.stem for p in (ROOT / "examples").glob("*.py")
                     if p.stem not in ("independent_metrics", "buggy_metrics"))
    assert len(stories) == 6
    for story in stories:
        assert (tmp_path / "html" / "auto_examples" / f"{story}.html").exists(), story
        assert (docs / "auto_examples" / "images" / f"sphx_glr_{story}_001.png").exists(), story
    api_page = (tmp_path / "html" / "api.html").read_text()
    assert all(f"refbnn.{name}" in api_page for name in ("metrics", "verify", "accuracy_under_bit_errors"))
