#!/usr/bin/env python
"""Seeded bugs: apply each realistic one-line bug of scripts/mutants.yaml to a scratch copy, run its tests.

    python scripts/mutants.py                       # every mutant (or: make mutants)
    python scripts/mutants.py --only rloo-denominator mv-loc-constant
    python scripts/mutants.py --module score --module relax
    python scripts/mutants.py --check               # only say which mutants still apply (no tests run)
    make mutants MUTANTS_ARGS="--module dv --timeout 600"

The repository is copied once into a temporary folder (never the working tree: nothing here is edited);
each mutant edits one file of that copy, runs the mutant's own test files (the module's mirrored tests)
with ``pytest -x`` on one thread under a timeout, and puts the file back. A mutant is

* ``caught``    the tests failed (or errored, or ran past the timeout: ``caught (timeout)``);
* ``SURVIVED``  the tests passed with the bug in place: a test is missing;
* ``stale``     its original text is no longer in the file (the module changed: rewrite the mutant);
* ``ambiguous`` its original text occurs more than once (make it longer);
* ``no tests``  none of its test files exists;
* ``broken``    the test files fail without the mutant (the baseline), so the result would mean nothing;
* ``error``     pytest itself could not run the files (no test selected, a usage error).

The score is caught / (caught + survived), per module and overall. The exit status is 0 when every
mutant that could run was caught, 1 otherwise (2 for a usage error). Not part of ``make test``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LIST = ROOT / "scripts" / "mutants.yaml"
IGNORE = shutil.ignore_patterns(".git", ".venv", "_build", "__pycache__", ".pytest_cache", ".grading", "submitted",
                                "autograded", "feedback", "grades", "gradebook.db", "*.egg-info", ".ipynb_checkpoints")
FIELDS = ("id", "file", "original", "replacement", "tests")


@dataclass
class Mutant:
    id: str
    file: str
    original: str
    replacement: str
    tests: list[str]
    kind: str = ""
    status: str = "not run"
    seconds: float = 0.0
    detail: str = ""
    ran: list[str] = field(default_factory=list)

    @property
    def module(self) -> str:
        return Path(self.file).stem


def load(path: Path = LIST) -> list[Mutant]:
    """The mutants of ``path``; a malformed entry is a usage error naming it."""
    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    mutants, seen = [], set()
    for index, entry in enumerate(entries):
        missing = [k for k in FIELDS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ValueError(f"{path.name}: entry {index} lacks {missing}")
        if entry["id"] in seen:
            raise ValueError(f"{path.name}: the id {entry['id']!r} is used twice")
        seen.add(entry["id"])
        tests = entry["tests"] if isinstance(entry["tests"], list) else [entry["tests"]]
        if entry["original"] == entry["replacement"]:
            raise ValueError(f"{path.name}: {entry['id']} replaces its text by itself")
        mutants.append(Mutant(entry["id"], entry["file"], entry["original"], entry["replacement"], tests,
                              entry.get("kind", "")))
    return mutants


def applies(mutant: Mutant, root: Path) -> str | None:
    """None when the mutant can be applied in ``root``; otherwise the status that says why not."""
    path = root / mutant.file
    if not path.is_file():
        return "stale"
    count = path.read_text(encoding="utf-8").count(mutant.original)
    if count == 0:
        return "stale"
    if count > 1:
        return "ambiguous"
    if not [t for t in mutant.tests if (root / t).is_file()]:
        return "no tests"
    return None


def run_tests(root: Path, tests: list[str], timeout: float) -> tuple[str, str]:
    """('passed' | 'failed' | 'timeout' | 'error', the end of pytest's output) for ``tests`` in ``root``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRADLAB_BUILT_HTML")}
    env.update(PYTHONPATH=str(root), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
               "-m", "not slow", *tests]
    try:
        proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", ""
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    if proc.returncode == 0:
        return "passed", " | ".join(tail)
    if proc.returncode in (3, 4, 5):  # internal or usage error, nothing collected: not the code's fault
        return "error", f"exit status {proc.returncode}: " + " | ".join(tail)
    return "failed", " | ".join(tail)


def mutate(mutant: Mutant, root: Path, timeout: float) -> None:
    path = root / mutant.file
    original = path.read_text(encoding="utf-8")
    mutant.ran = [t for t in mutant.tests if (root / t).is_file()]
    path.write_text(original.replace(mutant.original, mutant.replacement, 1), encoding="utf-8")
    start = time.perf_counter()
    try:
        outcome, tail = run_tests(root, mutant.ran, timeout)
    finally:
        path.write_text(original, encoding="utf-8")
        mutant.seconds = time.perf_counter() - start
    mutant.status = {"passed": "SURVIVED", "failed": "caught", "timeout": "caught (timeout)", "error": "error"}[outcome]
    mutant.detail = tail


def report(mutants: list[Mutant]) -> tuple[str, bool]:
    lines = [f"{'mutant':42} {'module':18} {'kind':12} {'status':18} {'s':>6}  tests"]
    for m in mutants:
        lines.append(f"{m.id:42} {m.module:18} {m.kind:12} {m.status:18} {m.seconds:6.1f}  {' '.join(m.ran or m.tests)}")
    per_module = defaultdict(lambda: [0, 0, 0])  # caught, survived, not run (stale, ambiguous, ...)
    for m in mutants:
        slot = 0 if m.status.startswith("caught") else 1 if m.status == "SURVIVED" else 2
        per_module[m.module][slot] += 1
    lines.append("")
    lines.append(f"{'module':18} caught / run   (not run: stale, ambiguous, no tests, broken, error)")
    for module, (caught, survived, skipped) in sorted(per_module.items()):
        run = caught + survived
        score = f"{100 * caught / run:5.1f}%" if run else "   - "
        lines.append(f"{module:18} {caught:3d} / {run:<3d} {score}" + (f"   ({skipped} not run)" if skipped else ""))
    caught = sum(v[0] for v in per_module.values())
    run = caught + sum(v[1] for v in per_module.values())
    skipped = sum(v[2] for v in per_module.values())
    score = f"{100 * caught / run:.1f}%" if run else "-"
    lines.append(f"score: {caught} / {run} caught ({score}); {skipped} not run")
    survivors = [m for m in mutants if m.status == "SURVIVED"]
    for m in survivors:
        lines.append(f"  survived: {m.id} ({m.file}): {m.original.strip()!r} -> {m.replacement.strip()!r}")
    return "\n".join(lines), not survivors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", type=Path, default=LIST, help="the mutants (default: scripts/mutants.yaml)")
    parser.add_argument("--only", nargs="+", default=[], metavar="ID", help="run only these mutants")
    parser.add_argument("--module", action="append", default=[], help="run only the mutants of this module (stem)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per test run (default 600)")
    parser.add_argument("--check", action="store_true", help="only check which mutants still apply")
    parser.add_argument("--no-baseline", action="store_true", help="skip running each test file unmutated first")
    args = parser.parse_args(argv)
    try:
        mutants = load(args.list)
    except (OSError, ValueError, yaml.YAMLError) as error:
        parser.error(str(error))
    unknown = set(args.only) - {m.id for m in mutants}
    if unknown:
        parser.error(f"unknown mutant ids: {sorted(unknown)}")
    if args.only:
        mutants = [m for m in mutants if m.id in args.only]
    if args.module:
        mutants = [m for m in mutants if m.module in args.module]
    if not mutants:
        parser.error("no mutant selected")

    for m in mutants:
        m.status = applies(m, ROOT) or ("applies" if args.check else "not run")
    if args.check:
        for m in mutants:
            print(f"{m.id:42} {m.file:28} {m.status}")
        fine = sum(m.status == "applies" for m in mutants)
        print(f"{fine} of {len(mutants)} mutants apply")
        return 0 if fine == len(mutants) else 1

    with tempfile.TemporaryDirectory(prefix="gradlab-mutants-") as scratch:
        root = Path(scratch) / "repo"
        shutil.copytree(ROOT, root, ignore=IGNORE, symlinks=True)
        print(f"scratch copy: {root}", flush=True)
        baseline: dict[tuple[str, ...], str] = {}
        for m in mutants:
            if m.status != "not run":
                print(f"{m.id}: {m.status}", flush=True)
                continue
            tests = tuple(t for t in m.tests if (root / t).is_file())
            if not args.no_baseline and tests not in baseline:
                outcome, tail = run_tests(root, list(tests), args.timeout)
                baseline[tests] = outcome
                if outcome != "passed":
                    print(f"baseline {' '.join(tests)}: {outcome} without any mutant: {tail}", flush=True)
            if baseline.get(tests, "passed") != "passed":
                m.status, m.ran = "broken", list(tests)
                continue
            mutate(m, root, args.timeout)
            print(f"{m.id}: {m.status} ({m.seconds:.0f} s)", flush=True)
    text, all_caught = report(mutants)
    print()
    print(text)
    return 0 if all_caught else 1


if __name__ == "__main__":
    sys.exit(main())
