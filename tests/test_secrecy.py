"""The secrecy model (book/instructors.md): what students get contains no solution, no hidden test and no
instructor command.

* the student repository written by scripts/export_student_repo.py has no instructor material, no line of
  a solution or a hidden test anywhere, and a Makefile that only runs what it contains;
* the student-facing pages (the lab pages of the book, the student notebooks) never tell students to run an
  instructor command.
* no visible test cell of a student notebook contains a solution (a function named like an answer, a one-line
  delegation to a listed gradlab reference, or an answer's signature built on one).
(Feedback without hidden-test code and hidden tests that detect delegation to gradlab's reference are
checked by tests/test_grading.py.)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import export_student_repo  # noqa: E402
import make_labs  # noqa: E402

REGION = re.compile(r"^[ \t]*### BEGIN (SOLUTION|HIDDEN TESTS)[ \t]*\n(.*?)^[ \t]*### END \1[ \t]*$", re.M | re.S)
INSTRUCTOR_COMMANDS = re.compile(
    r"make labs|make grade|make student-repo|nbgrader (autograde|generate_assignment|generate_feedback|"
    r"release_assignment|collect|export|db)|scripts/(make_labs|grade|export_student_repo)\.py|solutions/"
)


def protected_lines(kind: str) -> set[str]:
    """Lines of the ``kind`` regions (SOLUTION or HIDDEN TESTS) of every lab that appear nowhere else in its source."""
    lines = set()
    for lab in make_labs.find_labs():
        text = make_labs.source_md(lab).read_text(encoding="utf-8")
        inside = {line.strip() for m in REGION.finditer(text) if m.group(1) == kind for line in m.group(2).splitlines()}
        outside = {line.strip() for line in REGION.sub("", text).splitlines()}
        lines |= {line for line in inside - outside if len(line) > 25}
    return lines


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("student-repo") / "gradlab"
    export_student_repo.export(dest)
    return dest


def test_export_has_the_student_material_and_nothing_of_the_instructors(exported):
    files = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    for lab in make_labs.find_labs():
        assert f"labs/{lab}/{lab}.ipynb" in files
    assert "gradlab/__init__.py" in files and "book/intro.md" in files and "_config.yml" in files
    leaked = sorted(f for f in files if export_student_repo.instructor_only(f))
    assert not leaked, leaked
    assert not (exported / "solutions").exists() and not (exported / "nbgrader_config.py").exists()


def region_runs(kind: str, length: int) -> set[tuple[str, ...]]:
    """Runs of ``length`` consecutive non-blank lines of every lab's solutions (single lines are often idioms
    that a chapter shares, like ``losses.append(loss.item())``; four in a row are the solution)."""
    runs = set()
    for lab in make_labs.find_labs():
        text = make_labs.source_md(lab).read_text(encoding="utf-8")
        for m in REGION.finditer(text):
            if m.group(1) == kind:
                lines = [line.strip() for line in m.group(2).splitlines() if line.strip() and not line.strip().startswith("#")]
                runs |= {tuple(lines[i:i + length]) for i in range(len(lines) - length + 1)}
    return runs


def test_export_contains_no_solution_or_hidden_test_line(exported):
    """No three consecutive hidden-test lines appear anywhere, and no four solution lines outside gradlab:
    the labs rebuild pieces of the public package, whose code students may read (the guide says so; calling
    it earns no points)."""
    hidden, solutions = region_runs("HIDDEN TESTS", 3), region_runs("SOLUTION", 4)
    assert len(hidden) > 20 and len(solutions) > 20, "the check must be able to fail"
    for path in exported.rglob("*"):
        if not path.is_file() or path.suffix not in {".md", ".ipynb", ".py", ".txt", ".yml", ".toml", ""}:
            continue
        name = path.relative_to(exported).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".ipynb":
            text = "\n".join("".join(c.get("source", "")) for c in nbformat.reads(text, as_version=4).cells)
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
        found = [run for run in zip(lines, lines[1:], lines[2:]) if run in hidden]
        assert not found, f"{name} contains hidden-test code: {found[:1]}"
        if not name.startswith(("gradlab/", "tests/")):
            found = [run for run in zip(lines, lines[1:], lines[2:], lines[3:]) if run in solutions]
            assert not found, f"{name} contains solution code: {found[:1]}"


def test_export_makefile_only_runs_scripts_it_has(exported):
    makefile = (exported / "Makefile").read_text()
    for script in re.findall(r"scripts/[\w.]+\.(?:py|sh)", makefile):
        assert (exported / script).is_file(), f"the student Makefile runs {script}, which is not exported"
    assert "grade" not in re.findall(r"^([\w-]+):", makefile, re.M)
    assert re.search(r"^test: setup$", makefile, re.M) and re.search(r"^book: setup$", makefile, re.M)


def test_export_refuses_a_folder_with_files(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_student_repo.export(tmp_path)


def student_texts():
    for page in sorted((ROOT / "book" / "labs").glob("*.md")):
        yield page.relative_to(ROOT).as_posix(), page.read_text(encoding="utf-8")
    for lab in make_labs.find_labs():
        nb = nbformat.read(make_labs.release_ipynb(lab), as_version=4)
        yield f"labs/{lab}", "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("name,text", list(student_texts()), ids=lambda v: v if "/" in str(v)[:12] else "")
def test_student_pages_name_no_instructor_command(name, text):
    found = sorted({m.group(0) for m in INSTRUCTOR_COMMANDS.finditer(text)})
    assert not found, f"{name} tells students to run instructor commands: {found} (move them to book/instructors.md)"


def test_instructor_command_pattern_can_fail():
    assert INSTRUCTOR_COMMANDS.search("run `make labs` first") and INSTRUCTOR_COMMANDS.search("nbgrader autograde lab1")


# ------------------------------------------------ no visible test cell contains a solution (issue 19, item 3)

import ast  # noqa: E402

from gradlab import labcheck  # noqa: E402


def answer_signatures(lab: str) -> dict[str, list[str]]:
    """The functions (and classes) the answer cells of ``lab`` ask for: name -> argument names."""
    nb = nbformat.read(make_labs.build_source(lab), as_version=4)
    found = {}
    for c in nb.cells:
        meta = c.metadata.get("nbgrader", {})
        if meta.get("solution") and c.cell_type == "code":
            for node in ast.parse(c.source).body:
                if isinstance(node, ast.FunctionDef):
                    found[node.name] = [a.arg for a in node.args.args + node.args.kwonlyargs]
                elif isinstance(node, ast.ClassDef):
                    found[node.name] = []
    return found


def listed_references(lab: str) -> list:
    """Every object the labs' public lists of ``lab`` name (functions, classes)."""
    return [labcheck.resolve(name)[1] for task, names in labcheck.TASK_REFERENCES.items()
            if task.startswith(f"{lab}/") for name in names]


def dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def calls_a_reference(node: ast.AST, aliases: dict[str, str], references: list) -> bool:
    for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
        name = dotted(call.func, aliases)
        if not name or not name.startswith("gradlab"):
            continue
        try:
            owner, obj = labcheck.resolve(name)
        except TypeError:
            continue
        if any(obj is ref or owner is ref for ref in references):
            return True
    return False


def solutions_in(source: str, answers: dict[str, list[str]], references: list) -> list[str]:
    """Functions in ``source`` that are a solution: named like an answer (or ``reference_<answer>``), a one-line
    delegation to a listed gradlab reference, or an answer's signature calling one."""
    tree = ast.parse(source)
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gradlab"):
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
        elif isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname})
    found = []
    methods = {id(n) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for n in c.body}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or id(node) in methods:
            continue  # a method (an autograd Function's backward in a test) is not an answer
        body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        args = [a.arg for a in node.args.args + node.args.kwonlyargs]
        bare = node.name.removeprefix("reference_").removeprefix("your_")
        if bare in answers:
            found.append(f"{node.name} (named like the answer {bare})")
        elif len(body) == 1 and isinstance(body[0], ast.Return) and calls_a_reference(body[0], aliases, references):
            found.append(f"{node.name} (returns gradlab's reference of a task)")
        elif args and args in answers.values() and calls_a_reference(node, aliases, references):
            found.append(f"{node.name} (an answer's signature, built on gradlab's reference)")
    return found


@pytest.mark.parametrize("lab", make_labs.find_labs())
def test_no_visible_test_cell_contains_a_solution(lab):
    """The visible tests of the student notebook tell the truth: they hold no reference implementation of a task
    (those live in gradlab.labcheck_reference or in hidden tests)."""
    answers, references = answer_signatures(lab), listed_references(lab)
    nb = nbformat.read(make_labs.release_ipynb(lab), as_version=4)
    for c in nb.cells:
        meta = c.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution") and c.cell_type == "code":
            found = solutions_in(c.source, answers, references)
            assert not found, f"{lab} {meta['grade_id']}: a visible test cell defines a solution: {found}"


def test_the_solution_check_can_fail():
    answers = {"relax_grad_samples": ["f", "theta", "surrogate"], "reinforce_loss": ["logits", "labels"]}
    references = listed_references("lab4") + listed_references("lab3")
    one_liner = ("import gradlab\n\ndef relax(f, theta, s, *, n, g):\n"
                 "    return gradlab.discrete.RELAX(s, rebar_term=False).estimate(f, None, theta, num_samples=n)\n")
    named = "def reference_reinforce_loss(logits, labels):\n    return 0\n"
    signature = ("from gradlab.expectation import surrogate_loss\n\ndef loss(logits, labels):\n"
                 "    d = make(logits)\n    return surrogate_loss(cost, d, num_samples=4)\n")
    harmless = "import gradlab\n\ndef check(x):\n    expected = gradlab.expectation_grad(f, m, x)\n    assert expected.shape\n"
    assert solutions_in(one_liner, answers, references) and solutions_in(named, answers, references)
    assert solutions_in(signature.replace("(logits, labels)", "(logits, labels)"), answers, references)
    assert not solutions_in(harmless, answers, references)
