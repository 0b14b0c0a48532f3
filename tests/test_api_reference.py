"""The API reference (book/api.md) documents every public name of gradlab.

The page is generated at build time from `gradlab.__all__` by the book's Sphinx extension
(book/_ext/gradlab_book.py), so a name added to `__all__` appears with no edit to the page.
"""
from __future__ import annotations

import importlib.util
import inspect

import gradlab
from conftest import ROOT, soup


def load_extension():
    spec = importlib.util.spec_from_file_location("gradlab_book", ROOT / "book" / "_ext" / "gradlab_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def public_objects() -> list[str]:
    return [n for n in gradlab.__all__ if n != "__version__" and not inspect.ismodule(getattr(gradlab, n))]


def public_modules() -> list[str]:
    return [getattr(gradlab, n).__name__ for n in gradlab.__all__ if inspect.ismodule(getattr(gradlab, n))]


def test_generated_source_lists_every_public_name():
    source = load_extension().api_markdown()
    for name in public_objects():
        entries = source.count(f":: gradlab.{name}\n") + source.count(f":: {name}\n   :module: gradlab\n")
        assert entries == 1, f"gradlab.{name} is documented {entries} times in the generated API page"
    for module in public_modules():
        assert f".. automodule:: {module}\n" in source, f"{module} has no section in the API page"


def test_docstring_math_and_tables_become_rest():
    ext = load_extension()
    lines = ["Cost $2d$ and", "", "$$a = b$$", "", "| x | y |", "|---|---|", "| $1$ | 2 |"]
    ext.docstring_to_rst(None, "function", "f", None, {}, lines)
    text = "\n".join(lines)
    assert ":math:`2d`" in text and ".. math::" in text and "a = b" in text
    assert ".. list-table::" in text and "* - x" in text and "- :math:`1`" in text


def test_every_public_name_is_in_the_built_api_page(built):
    page = soup(built, "book/api")
    anchors = {tag["id"] for tag in page.find_all(id=True)}
    missing = [n for n in public_objects() if f"gradlab.{n}" not in anchors]
    missing += [m for m in public_modules() if f"module-{m}" not in anchors]
    assert not missing, f"not documented in the built API reference: {missing}"
    for name in public_objects():  # each entry shows a docstring, not just a signature
        entry = page.find(id=f"gradlab.{name}").find_parent("dl")
        assert entry.select_one("dd p"), f"gradlab.{name} has no description in the API reference"
