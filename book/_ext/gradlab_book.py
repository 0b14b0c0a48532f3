"""Sphinx extension with the gradlab book's own build steps.

* The API reference (`book/api.md`) is generated from `gradlab.__chapters__` (whose names
  make up `gradlab.__all__`) at build time: the page holds the marker `<!-- gradlab-api -->`,
  replaced by one autodoc entry per public name, a section per chapter of the book and in it
  a group per defining module, so a name added to `__all__` appears with no edit.
* Docstrings write math as `$...$` and tables in Markdown; autodoc gets reST.

sphinx-thebe registers its configuration script on every `env-before-read-docs` event, and
Jupyter Book fires that event more than once, so each page declared `const THEBE_JS_URL`
twice and the second declaration raised a JavaScript error on every page. This extension
drops repeated inline scripts and repeated script files from each page.
"""
from __future__ import annotations

import inspect
import os
import re
from pathlib import Path


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        # The same asset can come back with another priority, or with filename '' instead of None.
        key = (getattr(script, "filename", None) or "",
               tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key in seen:
            continue
        seen.add(key)
        unique.append(script)
    scripts[:] = unique


# --------------------------------------------------------------------------- the API reference
API_DOCNAME = "book/api"
API_MARKER = "<!-- gradlab-api -->"
_INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)([^$]+?)(?<![\\$])\$")  # may span lines
_DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.S)


def public_api() -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """gradlab's public names by chapter (`gradlab.__chapters__`), then by defining module.

    Within a chapter, the chapter's modules listed in `__all__` come first in their own order;
    a name whose defining module is not listed there gets a group of its own. Values (not
    functions or classes, e.g. a registry) are grouped with the public module that holds the
    same object; `__version__` is skipped.
    """
    import gradlab

    listed = [getattr(gradlab, n) for n in gradlab.__all__ if inspect.ismodule(getattr(gradlab, n))]
    chapters = []
    for title, names in gradlab.__chapters__:
        groups: dict[str, list[str]] = {}
        for name in names:
            obj = getattr(gradlab, name)
            if inspect.ismodule(obj):
                groups.setdefault(obj.__name__, [])
        for name in names:
            obj = getattr(gradlab, name)
            if inspect.ismodule(obj):
                continue
            module = getattr(obj, "__module__", None) if (inspect.isclass(obj) or callable(obj)) else None
            if module is None:  # a value: find the public module that holds the same object
                module = next((m.__name__ for m in listed if getattr(m, name, None) is obj), "gradlab")
            groups.setdefault(module, []).append(name)
        chapters.append((title, list(groups.items())))
    return chapters


def api_markdown() -> str:
    """MyST source for every public name: a section per chapter, a subsection per module."""
    import gradlab

    lines, seen = [], set()
    for title, groups in public_api():
        lines += [f"## {title}", ""]
        for module, names in groups:
            # autodoc writes reST, so each module's entries sit in an eval-rst block; a module that
            # serves two chapters (gradlab.data) is described once and indexed once.
            again = ["   :no-index:"] if module in seen else []
            seen.add(module)
            lines += [f"### `{module}`", "", "```{eval-rst}", f".. automodule:: {module}", "   :no-members:",
                      *again, ""]
            for name in names:
                obj = getattr(gradlab, name)
                if inspect.isclass(obj):
                    lines += [f".. autoclass:: gradlab.{name}", "   :members:", ""]
                elif callable(obj):
                    lines += [f".. autofunction:: gradlab.{name}", ""]
                else:  # a public value, e.g. a registry: its type and, for a mapping, its current keys
                    keys = ", ".join(f"``{k!r}``" for k in obj) if isinstance(obj, dict) else ""
                    lines += [f".. py:data:: {name}", "   :module: gradlab", f"   :type: {type(obj).__name__}",
                              "", f"   A ``{type(obj).__name__}``" + (f" with the keys {keys}." if keys else "."),
                              ""]
            lines += ["```", ""]
    return "\n".join(lines)


def insert_api(app, docname: str, source: list[str]) -> None:
    if docname == API_DOCNAME and API_MARKER in source[0]:
        source[0] = source[0].replace(API_MARKER, api_markdown())


def markdown_tables_to_rst(lines: list[str]) -> list[str]:
    """Turn Markdown pipe tables (``| a | b |`` rows, a ``|---|`` rule) into reST list-tables."""
    out, i = [], 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and set(lines[i + 1].strip()) <= set("|-: "):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                if not set(lines[i].strip()) <= set("|-: "):
                    rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            out += [f"{indent}.. list-table::", f"{indent}   :header-rows: 1", ""]
            for row in rows:
                out += [f"{indent}   * - {row[0]}"] + [f"{indent}     - {c}" for c in row[1:]]
            out.append("")
        else:
            out.append(lines[i])
            i += 1
    return out


def _top_level_split(tex: str, separator: str) -> list[str]:
    """``tex`` cut at each ``separator`` outside braces."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(tex):
        if tex[i] == "\\" and tex.startswith(separator, i) and depth == 0:
            parts.append(tex[start:i])
            i += len(separator)
            start = i
            continue
        if tex[i] == "\\":
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(tex[i], 0)
        i += 1
    return parts + [tex[start:]]


def phone_lines(tex: str) -> str:
    r"""A docstring's display formula as lines that fit a phone (the chapters break theirs by hand).

    Equations side by side (``\qquad``, ``\quad\Rightarrow\quad``) are stacked (``gathered``); a
    formula the docstring already wrote over several lines keeps those lines (``aligned``, the
    continuations indented). A formula with its own environment is left alone.
    """
    if "\\begin{" in tex:
        return tex
    tex = tex.replace(r"\quad\Rightarrow\quad", r"\qquad\Rightarrow ")
    parts = [p.strip().rstrip(",").strip() + ("," if p.strip().endswith(",") else "")
             for p in _top_level_split(tex, r"\qquad") if p.strip()]
    if len(parts) > 1:
        return r"\begin{gathered}" + r" \\ ".join(parts) + r"\end{gathered}"
    rows = [line.strip() for line in tex.strip().splitlines() if line.strip()]
    if len(rows) > 1:
        return r"\begin{aligned}&" + r" \\ &\quad ".join(rows) + r"\end{aligned}"
    return tex


def rst_math_for_phones(lines: list[str]) -> list[str]:
    """A ``.. math::`` block written over several lines gets the same line breaks as ``$$`` formulas."""
    out, i = [], 0
    while i < len(lines):
        out.append(lines[i])
        if lines[i].strip() == ".. math::" and i + 2 < len(lines) and not lines[i + 1].strip():
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())] + "   "
            j = i + 2
            while j < len(lines) and lines[j].strip() and lines[j].startswith(indent):
                j += 1
            block = lines[i + 2:j]
            if len(block) > 1:
                out += ["", indent + phone_lines("\n".join(block)).replace("\n", " ")]
                i = j
                continue
        i += 1
    return out


def docstring_to_rst(app, what, name, obj, options, lines: list[str]) -> None:
    """gradlab's docstrings are read in notebooks too: they write math as $...$ and $$...$$ and
    tables in Markdown. autodoc reads reST, so convert those three."""
    text = "\n".join(rst_math_for_phones(markdown_tables_to_rst(lines)))
    if "$" in text:
        def display(m: re.Match) -> str:
            body = " ".join(part.strip() for part in phone_lines(m.group(1)).splitlines())
            return f"\n\n.. math::\n\n   {body}\n\n"

        text = _DISPLAY_MATH.sub(display, text)
        # (a "|" inside a role can be read as a substitution reference: write it as \vert)
        text = _INLINE_MATH.sub(lambda m: ":math:`%s`" % m.group(1).strip().replace("|", r"\vert "), text)
        # a role must end before a word character ("$2^{25}$M"): an escaped space separates them
        text = re.sub(r"(:math:`[^`]*`)(?=\w)", r"\1\\ ", text)
    lines[:] = text.split("\n")


def resolve_gradlab_reference(app, env, node, contnode):
    """Docstrings name objects by their defining module (`gradlab.es.point.es_grad`); the API page documents
    them under their public name (`gradlab.es_grad`). Link to that; an internal helper that is not public
    (not in `gradlab.__all__`) is shown as plain code instead of a broken link."""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("gradlab."):
        return None
    public = "gradlab." + target.rsplit(".", 1)[-1]
    if public != target:
        domain = env.get_domain("py")
        found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], public, node, contnode)
        if found is not None:
            return found
    return contnode


# --------------------------------------------------------------------------- how pages are executed
BOOK = Path(__file__).resolve().parents[1]
FRAMES_DIR = BOOK / "_static" / "frames"


def execution_environment() -> dict[str, str]:
    """What the kernels that execute the pages inherit (the notebooks' kernels start from this process).

    * ``IPYTHONDIR``: book/_ext/ipython, whose startup file sets the figure settings of every page
      (retina PNGs, a legible smallest font at phone width);
    * ``TQDM_MININTERVAL``: a text progress bar redraws only when it closes, so an executed page
      shows each bar's final line (tqdm reads ``TQDM_*`` defaults from the environment);
    * ``GRADLAB_FRAMES_DIR`` / ``GRADLAB_FRAMES_URL``: explorers write their precomputed frames as
      PNG files into book/_static/frames (copied into the built book) instead of inlining them.
      Every page with an explorer lives in book/, hence the URL relative to it.
    """
    return {
        "IPYTHONDIR": str(Path(__file__).resolve().parent / "ipython"),
        "TQDM_MININTERVAL": "1e9",
        "GRADLAB_FRAMES_DIR": str(FRAMES_DIR),
        "GRADLAB_FRAMES_URL": "../_static/frames",
    }


def setup(app):
    os.environ.update(execution_environment())
    FRAMES_DIR.mkdir(parents=True, exist_ok=True)
    # Run after sphinx-thebe and the themes have added their scripts.
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    app.connect("source-read", insert_api)
    app.connect("autodoc-process-docstring", docstring_to_rst)
    app.connect("missing-reference", resolve_gradlab_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
