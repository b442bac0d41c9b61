"""The developer's TODO list for a repository: one item per task the model works on overnight.

Accepted markers: ``- item``, ``* item``, ``+ item``, ``1. item``, ``1) item`` and checkboxes
``- [ ] item``; a checked box (``- [x] item``) is done and skipped. Lines indented deeper than
an item's marker belong to that item (its body, nested bullets included); blank lines inside an
item are kept. Headings (``# ...``), fenced code blocks and text not under an item are context,
not items.

A file with no markers at its outermost level is read as a plain-text list: each non-empty line
that is not indented is an item, and indented lines below it (bullets included) are its body.
That rule applies only when no outermost line has a marker, so a stray unmarked line in a
Markdown list (an intro sentence, a note) is never turned into a task.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from dataclasses import dataclass

from jobs.errors import InvalidInputError

FIELD = "todo"
MAX_SLUG_CHARS = 48
_EXAMPLE = "'- fix the login bug'"

# marker, then an optional checkbox, then the title; a marker needs whitespace or the line end
# after it, so '-x', '1.5 release' and '---' are text, not items.
_MARKER = re.compile(r"^(?:[-*+]|\d{1,9}[.)])(?:\s+|$)")
_CHECKBOX = re.compile(r"^\[([ xX])\](?:\s+|$)")
_HEADING = re.compile(r"^#{1,6}(?:\s|$)")
_FENCE = re.compile(r"^(`{3,}|~{3,})")
_RULE = re.compile(r"^([-*_])(?:\s*\1){2,}$")  # '* * *' is a thematic break, not an item


@dataclass(frozen=True)
class TodoItem:
    line_no: int
    title: str
    body: str
    slug: str

    @property
    def text(self) -> str:
        return f"{self.title}\n{self.body}" if self.body else self.title


@dataclass(frozen=True)
class _Line:
    line_no: int
    indent: int
    text: str  # without leading whitespace; "" for a blank line
    raw: str


@dataclass
class _Draft:
    """An item while its continuation lines are being collected."""

    line_no: int
    indent: int
    title: str
    done: bool
    body: list[str]


def _lines(text: str) -> list[_Line]:
    lines = []
    for no, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        expanded = raw.expandtabs(4).rstrip()
        stripped = expanded.lstrip()
        lines.append(_Line(no, len(expanded) - len(stripped), stripped, expanded))
    return lines


def _outside_fences(lines: list[_Line]) -> list[_Line]:
    """Drop top-level fenced blocks, so a bullet inside a code example never becomes a task.
    Fences indented under an item stay: they are part of that item's body."""
    kept: list[_Line] = []
    fence: str | None = None
    for line in lines:
        opening = _FENCE.match(line.text) if line.indent == 0 else None
        if fence is not None:
            if line.text.startswith(fence) and line.text.strip(fence[0]) == "":
                fence = None
            continue
        if opening:
            fence = opening.group(1)
            continue
        kept.append(line)
    return kept


def _split_marker(text: str) -> tuple[str, bool] | None:
    """``(title, done)`` when the line starts with a list marker, else None."""
    marker = _MARKER.match(text)
    if marker is None:
        return None
    rest = text[marker.end():]
    box = _CHECKBOX.match(rest)
    if box is None:
        return rest.strip(), False
    return rest[box.end():].strip(), box.group(1) in "xX"


def _start(line: _Line, marked: bool) -> _Draft | None:
    if line.indent > 0 and not marked:
        return None
    if marked:
        split = _split_marker(line.text)
        if split is None:
            return None
        title, done = split
    else:
        title, done = line.text, False
    if not title and not done:
        raise InvalidInputError(FIELD, f"line {line.line_no}: the item has no title (received "
                                f"{line.raw.strip()!r}); write the task after the marker, as "
                                f"{_EXAMPLE}")
    return _Draft(line.line_no, line.indent, title, done, [])


def _drafts(lines: list[_Line], marked: bool) -> list[_Draft]:
    drafts: list[_Draft] = []
    current: _Draft | None = None
    for line in lines:
        if current is not None and (not line.text or line.indent > current.indent):
            current.body.append(line.raw)
            continue
        current = None
        if not line.text or _HEADING.match(line.text) or _RULE.match(line.text):
            continue
        current = _start(line, marked)
        if current is not None:
            drafts.append(current)
    return [d for d in drafts if not d.done]


def _has_markers(lines: list[_Line]) -> bool:
    """Whether the list uses markers at its outermost level. Bullets only nested under
    unmarked lines (a plain list with indented details) leave it a plain-text list."""
    content = [ln for ln in lines
               if ln.text and not _HEADING.match(ln.text) and not _RULE.match(ln.text)]
    if not content:
        return False
    outer = min(ln.indent for ln in content)
    return any(ln.indent == outer and _split_marker(ln.text) is not None for ln in content)


def _body(lines: list[str]) -> str:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return textwrap.dedent("\n".join(lines)).strip("\n")


def slugify(title: str) -> str:
    """Lowercase ASCII words joined by '-', cut at a word boundary to ``MAX_SLUG_CHARS``."""
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return _cut(slug, MAX_SLUG_CHARS)


def _cut(slug: str, limit: int) -> str:
    if len(slug) <= limit:
        return slug
    cut = slug[:limit]
    word_cut = cut.rsplit("-", 1)[0]
    # Cut at a word boundary unless that throws away most of the slug (one very long word).
    if slug[limit] != "-" and len(word_cut) >= limit // 2:
        cut = word_cut
    return cut.strip("-")


def _unique_slugs(titles: list[str]) -> list[str]:
    taken: set[str] = set()
    slugs = []
    for index, title in enumerate(titles, start=1):
        base = slugify(title) or f"item-{index}"
        slug, n = base, 1
        while slug in taken:
            n += 1
            suffix = f"-{n}"
            slug = _cut(base, MAX_SLUG_CHARS - len(suffix)) + suffix
        taken.add(slug)
        slugs.append(slug)
    return slugs


def parse_todo(text: str, *, max_items: int = 200) -> tuple[TodoItem, ...]:
    """The open items of a TODO list, in file order. Raises ``InvalidInputError`` (field
    ``todo``) when there are no open items, more than ``max_items``, or an item has no title."""
    lines = _outside_fences(_lines(text))
    marked = _has_markers(lines)
    drafts = _drafts(lines, marked)
    if not drafts:
        raise InvalidInputError(FIELD, "the TODO list has no items; write one per line as "
                                f"{_EXAMPLE}")
    if len(drafts) > max_items:
        raise InvalidInputError(FIELD, f"the TODO list has {len(drafts)} open items; the limit "
                                f"is {max_items}. Split the list or remove finished items.")
    slugs = _unique_slugs([d.title for d in drafts])
    return tuple(TodoItem(d.line_no, d.title, _body(d.body), slug)
                 for d, slug in zip(drafts, slugs))
