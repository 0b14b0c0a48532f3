"""Shared pytest set-up.

Tests use tiny tensors, for which torch's intra-op thread pool only adds
synchronisation cost; on a busy 2-core machine the spinning worker threads made
a 130-step MLP training take ~8 s of CPU instead of ~0.1 s. One thread keeps
the suite fast and its timings stable.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from bs4 import BeautifulSoup

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")


def toc_files() -> list[str]:
    """Every page of the book, in table-of-contents order (paths without suffix)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [ch["file"] for ch in part["chapters"]]
    return files


def soup(html: Path, page: str) -> BeautifulSoup:
    path = html / f"{page}.html"
    assert path.exists(), f"{page} has no HTML page"
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    """Build the whole book once per session, strictly, as `make book` does; return its HTML folder.

    GRADLAB_BUILT_HTML=<folder> reuses a finished strict build instead (e.g. `_build/html` after
    `make book`), for iterating on the book and browser tests without rebuilding.
    """
    prebuilt = os.environ.get("GRADLAB_BUILT_HTML")
    if prebuilt:
        html = Path(prebuilt)
        assert (html / "index.html").exists(), f"GRADLAB_BUILT_HTML={prebuilt} holds no built book"
        return html
    out = tmp_path_factory.mktemp("book")
    proc = subprocess.run(
        [str(JUPYTER_BOOK), "build", str(ROOT), "--path-output", str(out), "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"book build failed:\n{log[-8000:]}"
    html = out / "_build" / "html"
    assert (html / "index.html").exists(), log[-3000:]
    return html
