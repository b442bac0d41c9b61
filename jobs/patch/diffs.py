"""Normalising diffs so that candidates making the same change compare equal."""

from __future__ import annotations

import re

_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
_NOISE = ("index ", "similarity index ", "dissimilarity index ", "\\ No newline")
_KEEP_EMPTY = ("new file mode", "deleted file mode", "rename ", "Binary files")


def _hunk_changes(body: list[str]) -> list[str]:
    """The changed lines of one hunk, trailing space stripped, blank ones gone, and runs that
    then change nothing (whitespace-only edits) dropped."""
    changes: list[str] = []
    removed: list[str] = []
    added: list[str] = []
    for line in [*body, " "]:  # the final context line flushes the last run
        tag, text = line[:1], line[1:].rstrip()
        if tag in ("+", "-"):
            (added if tag == "+" else removed).extend([text] if text else [])
        elif tag != "\\":
            if removed != added:
                changes += [f"-{t}" for t in removed] + [f"+{t}" for t in added]
            removed, added = [], []
    return changes


def _hunk_end(lines: list[str], i: int, old: int, new: int) -> int:
    """Walk a hunk by its line counts, so a removed line reading '--- x' is no file header."""
    while i < len(lines) and (old > 0 or new > 0):
        tag = lines[i][:1]
        old -= tag not in ("+", "\\")
        new -= tag not in ("-", "\\")
        i += 1
    return i


def _file_sections(diff: str) -> list[tuple[list[str], list[str]]]:
    """``(header lines, changed lines)`` for each file in a unified diff."""
    sections: list[tuple[list[str], list[str]]] = [([], [])]
    lines, i = diff.splitlines(), 0
    while i < len(lines):
        line, i = lines[i], i + 1
        hunk = _HUNK.match(line)
        if hunk:
            end = _hunk_end(lines, i, int(hunk.group(1) or 1), int(hunk.group(2) or 1))
            sections[-1][1].extend(_hunk_changes(lines[i:end]))
            i = end
            continue
        headers = sections[-1][0]
        if line.startswith("diff ") or line.startswith("--- ") and any(
                h.startswith("--- ") for h in headers):
            sections.append(([], []))
        if line.strip() and not line.startswith(_NOISE):
            sections[-1][0].append(line.split("\t")[0].rstrip())
    return sections


def normalise_diff(diff: str) -> str:
    """A canonical form of a unified diff for grouping candidates: file headers and changed
    lines only. Index hashes, hunk positions and context are dropped, trailing whitespace is
    stripped, and blank-line-only or whitespace-only changes vanish, so two candidates making
    the same change compare equal. It is a key for comparison; it cannot be applied."""
    out: list[str] = []
    for headers, changes in _file_sections(diff):
        if changes or any(h.startswith(_KEEP_EMPTY) for h in headers):
            out += headers + changes
    return "".join(f"{line}\n" for line in out)
