"""scripts/mutants.py: seeded bugs are applied to a copy, reported caught / survived / stale, never crash."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import mutants  # noqa: E402


@pytest.mark.parametrize("name", ["mutants.yaml", "mutants_fresh.yaml"])
def test_the_list_is_well_formed(name):
    """The project's list, and the fresh set an outside reviewer wrote from the modules alone."""
    listed = mutants.load(ROOT / "scripts" / name)
    assert len(listed) >= 40, len(listed)
    for m in listed:
        assert m.file.startswith("gradlab/") and m.file.endswith(".py"), m.id
        assert m.tests and all(t.startswith("tests/test_") for t in m.tests), m.id
        assert "\n" not in m.original.strip(), f"{m.id}: one line (fragment) per mutant"
    assert len({m.module for m in listed}) >= 12, "mutants for every estimator module"


def test_malformed_entries_are_usage_errors(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- id: a\n  file: x.py\n  original: y\n")
    with pytest.raises(ValueError, match="lacks"):
        mutants.load(path)
    entry = "- {id: a, file: x.py, original: y, replacement: z, tests: [tests/test_x.py]}\n"
    path.write_text(entry * 2)
    with pytest.raises(ValueError, match="used twice"):
        mutants.load(path)


@pytest.fixture
def repo(tmp_path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text("def add(a, b):\n    return a + b\n\n\ndef twice(a):\n    return a + a\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_strong.py").write_text("from pkg.mod import add\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    (tmp_path / "tests" / "test_weak.py").write_text("from pkg.mod import add\n\ndef test_add():\n    assert add(0, 0) == 0\n")
    return tmp_path


def mutant(original="return a + b", replacement="return a - b", tests=("tests/test_strong.py",)):
    return mutants.Mutant("m", "pkg/mod.py", original, replacement, list(tests))


def test_stale_ambiguous_and_untested_mutants_are_reported(repo):
    assert mutants.applies(mutant(), repo) is None
    assert mutants.applies(mutant(original="return a * b"), repo) == "stale"
    assert mutants.applies(mutant(original="return a + "), repo) == "ambiguous"
    assert mutants.applies(mutant(tests=["tests/test_gone.py"]), repo) == "no tests"
    assert mutants.applies(mutants.Mutant("m", "pkg/gone.py", "x", "y", ["tests/test_strong.py"]), repo) == "stale"


def test_a_strong_test_catches_the_mutant_a_weak_one_lets_it_survive_and_the_file_is_restored(repo):
    before = (repo / "pkg" / "mod.py").read_text()
    caught, survived = mutant(), mutant(tests=["tests/test_weak.py"])
    mutants.mutate(caught, repo, timeout=120)
    mutants.mutate(survived, repo, timeout=120)
    assert caught.status == "caught" and survived.status == "SURVIVED", (caught.detail, survived.detail)
    assert (repo / "pkg" / "mod.py").read_text() == before
    text, all_caught = mutants.report([caught, survived])
    assert "score: 1 / 2 caught (50.0%)" in text and not all_caught
