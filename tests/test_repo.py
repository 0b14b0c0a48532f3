"""Project-level promises: metadata, the two README commands, CI."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_torch_is_a_range_not_a_pin():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = meta["project"]["dependencies"]
    torch = [d for d in deps if re.match(r"torch\b", d)]
    assert torch == ["torch>=2.1"], torch
    reqs = [l.strip() for l in (ROOT / "requirements.txt").read_text().splitlines()]
    assert "torch>=2.1" in reqs and not any(l.startswith("torch==") for l in reqs)


def test_readme_quickstart_has_the_two_commands_and_ci_uses_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [l.split("#")[0].strip() for l in block.strip().splitlines()]
    assert commands == ["make book", "make test"], commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), ci
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^book: setup$", makefile, re.M) and re.search(r"^test: setup$", makefile, re.M)


def test_top_level_layout():
    names = ["book", "_config.yml", "_toc.yml", "labs", "tests", "requirements.txt",
             "gradlab", "pyproject.toml", "README.md", ".ci/run", "LICENSE"]
    # The student repository (scripts/export_student_repo.py) has no instructor material.
    if not (ROOT / "STUDENT_REPOSITORY.md").exists():
        names += ["solutions", "nbgrader_config.py"]
    for name in names:
        assert (ROOT / name).exists(), name


def test_package_does_not_import_book_or_labs():
    for py in (ROOT / "gradlab").glob("*.py"):
        text = py.read_text()
        assert not re.search(r"^\s*(from|import)\s+(book|labs|solutions|tests)\b", text, re.M), py.name


# owner/name after "github.com/" (or Colab's "github/"), up to a slash, quote, backslash, space, ")" or "#".
LINK = re.compile(r"github(?:\.com)?/([\w.-]+/[\w.-]+?)(?:\.git)?(?=[/\\\"'\s)#]|$)")


def test_every_repository_link_matches_the_book_config():
    """Colab badges, install cells and launch buttons must all point at one repository."""
    import yaml

    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    owner_repo = url.split("github.com/", 1)[1].strip("/")
    places = [ROOT / "README.md", *(ROOT / "book").rglob("*.md"), *(ROOT / "solutions").rglob("*.md"),
              *(ROOT / "scripts").glob("*.py"), *(ROOT / "labs").rglob("*.ipynb"), *(ROOT / "book").glob("*.ipynb")]
    found = 0
    for path in places:
        for match in LINK.finditer(path.read_text()):
            found += 1
            assert match.group(1) == owner_repo, f"{path.relative_to(ROOT)} links to {match.group(1)}, not {owner_repo}"
    assert found >= 10, found
