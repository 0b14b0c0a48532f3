"""Write an unexecuted .ipynb beside every MyST notebook page in book/.

The .md pages are the source of truth.  The paired .ipynb files exist so that the
book's Colab launch button opens a real notebook (Colab cannot open MyST markdown);
they are excluded from the Sphinx build.  Each gets a first cell that installs
gradlab when, and only when, it runs in Colab.

    python scripts/make_notebooks.py          # (re)write book/*.ipynb
    python scripts/make_notebooks.py --check  # exit 1 if any is missing or stale
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
REPO_URL = "https://github.com/gradlab/gradlab"

COLAB_CELL = f'''# Colab only: install gradlab (does nothing anywhere else).
import sys

if "google.colab" in sys.modules:
    %pip install --quiet "gradlab @ git+{REPO_URL}"'''


def notebook_pages() -> list[Path]:
    """Book pages that are jupytext notebooks (their header names a kernel)."""
    pages = []
    for md in sorted(BOOK.glob("*.md")):
        head = md.read_text(encoding="utf-8")[:600]
        if head.startswith("---") and "jupytext:" in head and "kernelspec:" in head:
            pages.append(md)
    return pages


def render(md: Path) -> str:
    """The .ipynb text for one page: the Colab cell, then the page's cells, no outputs."""
    nb = jupytext.read(md)
    nb.metadata.pop("jupytext", None)
    colab = nbformat.v4.new_code_cell(COLAB_CELL)
    colab.metadata["tags"] = ["colab"]
    nb.cells.insert(0, colab)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # stable ids: regeneration is byte-identical
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for md in notebook_pages():
        target = md.with_suffix(".ipynb")
        text = render(md)
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            continue
        stale.append(target.relative_to(ROOT))
        if not args.check:
            target.write_text(text, encoding="utf-8")
    for ipynb in sorted(BOOK.glob("*.ipynb")):
        if not ipynb.with_suffix(".md").exists():
            stale.append(ipynb.relative_to(ROOT))
            if not args.check:
                ipynb.unlink()
    verb = "stale or missing" if args.check else "rewritten"
    for path in stale:
        print(f"{verb}: {path}")
    if args.check and stale:
        print("run `make notebooks` to regenerate them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
