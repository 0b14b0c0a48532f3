"""The product speaks of the project alone: no run logs in what a reader or user sees.

A results file, the README or a book page names the machine as "2 CPU cores, no GPU" (cores, GPU,
torch and its threads), never the load average, the kernel or CPU model string, who ran a benchmark
or on whose machine, or a target "met / NOT met". Benchmarks print the load to the console
(``benchmarks/machine.py``); this file checks every published source, and the built pages (which
include benchmark tables and print cell outputs), for each of those kinds of run log.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import soup, toc_files

ROOT = Path(__file__).resolve().parents[1]

RUN_LOG = {
    "load average": re.compile(r"load average|loadavg", re.I),
    "kernel version": re.compile(r"\bLinux \d+\.\d+|-fc-v\d+"),
    "CPU model string": re.compile(r"\bEPYC\b|\bXeon\b|family 6, model|logical CPUs visible"),
    "who ran it": re.compile(r"\bengineers?['’]?s?\b|development (VM|machine)|\bdev VM\b|\bKVM\b|shared \d-core VM", re.I),
    "target verdict": re.compile(r"\bNOT met\b|\b(target|goal)s?\b[^.\n]{0,80}\b(met|not met)\b|\bmet\b\s*(\||$)", re.I | re.M),
}


def published_sources() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CITATION.cff", ROOT / "benchmarks" / "README.md"]
    files += sorted((ROOT / "benchmarks" / "results").glob("*"))
    files += [p for p in sorted((ROOT / "book").rglob("*.md")) if "_build" not in p.parts]
    files += sorted((ROOT / "gradlab").rglob("*.py"))
    return [f for f in files if f.is_file()]


def run_log_hits(text: str) -> list[str]:
    hits = []
    for kind, pattern in RUN_LOG.items():
        for match in pattern.finditer(text):
            start = max(match.start() - 30, 0)
            hits.append(f"{kind}: ...{text[start:match.end() + 30]!r}")
    return hits


def test_the_patterns_find_each_kind_of_run_log():
    """Each kind is found in a line of the sort the benchmarks used to write, and a clean line passes."""
    samples = {
        "load average": "torch 2.13 using 1 threads; load average at start 6.8, no GPU.",
        "kernel version": "Python 3.11.7, Linux 6.18.44-fc-v782;",
        "CPU model string": "Measured on: AMD EPYC, 2 logical CPUs visible",
        "who ran it": "the shared 2-core development VM while other engineers' jobs were running",
        "target verdict": "Target: ≥ 1.7× faster with 2 processes: 0.57×, NOT met.",
    }
    for kind, line in samples.items():
        assert any(h.startswith(kind) for h in run_log_hits(line)), kind
    assert run_log_hits("Measured 2026-11-29 on 2 CPU cores, no GPU; torch 2.13.0+cpu, 1 thread.") == []
    assert run_log_hits("| low rank | 13.5× | met |") and not run_log_hits("the estimator met the bound")


def test_published_sources_carry_no_run_log():
    found = {}
    for path in published_sources():
        hits = run_log_hits(path.read_text(encoding="utf-8", errors="replace"))
        if hits:
            found[str(path.relative_to(ROOT))] = hits[:3]
    assert not found, f"run logs in published files (state the machine as '2 CPU cores, no GPU'): {found}"


@pytest.mark.book
def test_built_pages_carry_no_run_log(built):
    found = {}
    for name in toc_files():
        hits = run_log_hits(soup(built, name).get_text(" "))
        if hits:
            found[name] = hits[:3]
    assert not found, f"run logs on built pages: {found}"
