"""Author-year labels for the book's bibliography.

The chapters cite author-year (``bibtex_reference_style: author_year`` in ``_config.yml``), so
the bibliography lists its entries with the same labels, "Mohamed et al. 2020", instead of
pybtex's alphabetic "[MRFM20]". The formatting style ``gradlab_authoryear`` is pybtex's
``unsrt`` entry format with these labels, sorted by author, year and title;
``_config.yml`` selects it with ``bibtex_default_style``.
"""
from __future__ import annotations

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle


def _last_names(entry) -> list[str]:
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = []
    for person in people:
        last = " ".join(Text.from_latex(part).render_as("text") for part in person.prelast_names + person.last_names)
        names.append(last or " ".join(person.first_names))
    return names


def author_year_label(entry) -> str:
    """'Smith 2001', 'Smith and Jones 2001', 'Smith et al. 2001' (the first author's last name for three or more)."""
    names = _last_names(entry)
    year = entry.fields.get("year", "n.d.")
    if not names:
        who = entry.fields.get("title", entry.key)[:20]
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who} {year}"


class AuthorYearLabelStyle(BaseLabelStyle):
    """Author-year labels; a repeated label gets a, b, ... after the year."""

    def format_labels(self, sorted_entries):
        labels = [author_year_label(entry) for entry in sorted_entries]
        counts: dict[str, int] = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        seen: dict[str, int] = {}
        for label in labels:
            if counts[label] == 1:
                yield label
            else:
                seen[label] = seen.get(label, 0) + 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]


class AuthorYearStyle(UnsrtStyle):
    default_label_style = "gradlab_authoryear"
    default_sorting_style = "author_year_title"


register_plugin("pybtex.style.labels", "gradlab_authoryear", AuthorYearLabelStyle)
register_plugin("pybtex.style.formatting", "gradlab_authoryear", AuthorYearStyle)
_ = SortingStyle  # the sorting plugin ships with pybtex; imported to fail early if it is missing


def setup(app):
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
