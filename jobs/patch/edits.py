"""The edits a model proposes for one TODO item: parse its answer, apply it to a checkout, and
normalise the resulting diff so equal candidates can be grouped.

Two formats, both plain text (code is never asked for inside JSON, where models mangle escapes):

- whole-file (``EDIT_FORMAT_WHOLE``): the file path on its own line (or ``File: path``, or in
  the fence's info string, as in ```` ```python src/app.py ````), then a fenced block holding
  the entire new content.
- SEARCH/REPLACE (``EDIT_FORMAT_SEARCH_REPLACE``, aider's format): the path on its own line,
  then ``<<<<<<< SEARCH`` / old lines / ``=======`` / new lines / ``>>>>>>> REPLACE``, usually
  inside a fence. A block with no path of its own reuses the previous block's path.

Parsing never raises on a malformed answer: what it cannot read becomes a ``problems`` entry.
Applying the edits is ``jobs.patch.apply``; comparing the resulting diffs, ``jobs.patch.diffs``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jobs.errors import InvalidInputError

EDIT_FORMAT_WHOLE = "whole"
EDIT_FORMAT_SEARCH_REPLACE = "search-replace"
EDIT_FORMATS = (EDIT_FORMAT_WHOLE, EDIT_FORMAT_SEARCH_REPLACE)

# Below this size models reproduce old lines too loosely for SEARCH blocks to match.
SEARCH_REPLACE_MIN_PARAMS_B = 7.0

_FENCE = re.compile(r"^(`{3,}|~{3,})\s*(.*)$")
_SEARCH = re.compile(r"^<{5,9} ?SEARCH\s*$")
_DIVIDER = re.compile(r"^={5,9}\s*$")
_REPLACE = re.compile(r"^>{5,9} ?REPLACE\s*$")
_BARE_NAMES = frozenset({"Makefile", "Dockerfile", "Containerfile", "Justfile", "Procfile",
                         "Gemfile", "Rakefile", "Vagrantfile", "Jenkinsfile", "LICENSE",
                         "README", "CODEOWNERS"})
_PATH_PREFIX = re.compile(r"^(?:file(?:name)?|path)\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class FileEdit:
    path: str
    search: str | None  # None: ``replace`` is the whole new content of the file
    replace: str


@dataclass(frozen=True)
class ParsedEdits:
    edits: tuple[FileEdit, ...]
    problems: tuple[str, ...]



def choose_edit_format(model_params_b: float | None) -> str:
    """Whole files for small or unknown models; SEARCH/REPLACE (far fewer output tokens) for
    models large enough to quote the old lines exactly."""
    large = model_params_b is not None and model_params_b >= SEARCH_REPLACE_MIN_PARAMS_B
    return EDIT_FORMAT_SEARCH_REPLACE if large else EDIT_FORMAT_WHOLE


# --- parsing ----------------------------------------------------------------------------------


def _as_path(line: str) -> str | None:
    """The path when a line holds nothing but one (optionally as a heading, bold, in backticks,
    after ``File:``, or followed by a colon); None for prose."""
    text = line.strip().lstrip("#").replace("*", "").replace("`", "").strip()
    text = _PATH_PREFIX.sub("", text).strip().strip("'\"").rstrip(":").strip()
    if not text or any(c.isspace() for c in text) or _FENCE.match(text):
        return None
    if not re.fullmatch(r"[\w./\\@+~-]+", text) or text.endswith("."):
        return None
    # A lone word ("Updated:") is prose unless it is a well-known file without an extension.
    return text if "." in text or "/" in text or text in _BARE_NAMES else None


def _info_path(info: str) -> str | None:
    """A path in a fence's info string: ```` ```python src/a.py ```` or ```` ```src/a.py ````."""
    words = info.split()
    candidates = words[1:] if len(words) > 1 else [w for w in words if "/" in w or "." in w]
    for word in candidates:
        path = _as_path(word)
        if path:
            return path
    return None


def _previous_text(lines: list[str], index: int) -> str | None:
    for line in reversed(lines[:index]):
        if line.strip():
            return line
    return None


def _joined(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(fence) and stripped.strip(fence[0]) == ""


def _parse_whole(lines: list[str]) -> ParsedEdits:
    edits: list[FileEdit] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i].strip())
        if opening is None:
            i += 1
            continue
        fence, start = opening.group(1), i
        before = _previous_text(lines, start)
        path = _info_path(opening.group(2)) or (_as_path(before) if before else None)
        i += 1
        while i < len(lines) and not _closes(lines[i], fence):
            i += 1
        if i == len(lines):
            problems.append(f"line {start + 1}: the code block{f' for {path}' if path else ''} "
                            "is never closed (the answer may have been cut off); it was ignored")
        elif path is None:
            problems.append(f"line {start + 1}: a code block with no file path was ignored; put "
                            "the path on its own line just above the opening fence")
        else:
            edits.append(FileEdit(path, None, _joined(lines[start + 1:i])))
        i += 1
    return ParsedEdits(tuple(edits), tuple(problems))


def _block_path(lines: list[str], index: int, last_path: str | None) -> str | None:
    """The path a SEARCH marker on line ``index`` belongs to: the line above it, or above its
    opening fence (or that fence's info string); else the previous block's path."""
    for back in range(index - 1, -1, -1):
        line = lines[back].strip()
        if not line:
            continue
        fence = _FENCE.match(line)
        if fence and fence.group(2):
            return _info_path(fence.group(2)) or _block_path(lines, back, last_path)
        if fence:
            continue
        return _as_path(line) or last_path
    return last_path


def _read_block(lines: list[str], start: int) -> tuple[list[str], list[str], int, str | None]:
    """``(search, replace, next index, problem)`` for the block whose SEARCH marker is on
    ``start``."""
    search: list[str] = []
    replace: list[str] = []
    target = search
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if _SEARCH.match(line):
            return search, replace, i, "a new SEARCH marker came before '>>>>>>> REPLACE'"
        if _DIVIDER.match(line) and target is search:
            target = replace
        elif _REPLACE.match(line):
            if target is search:
                return search, replace, i + 1, "'>>>>>>> REPLACE' came without a '=======' line"
            return search, replace, i + 1, None
        else:
            target.append(line)
    missing = "'=======' and '>>>>>>> REPLACE'" if target is search else "'>>>>>>> REPLACE'"
    return search, replace, len(lines), f"the block ends without {missing} (cut off?)"


def _parse_search_replace(lines: list[str]) -> ParsedEdits:
    edits: list[FileEdit] = []
    problems: list[str] = []
    last_path: str | None = None
    i = 0
    while i < len(lines):
        if not _SEARCH.match(lines[i]):
            i += 1
            continue
        path = _block_path(lines, i, last_path)
        last_path = path or last_path  # a broken block still names the file of the next
        search, replace, after, problem = _read_block(lines, i)
        where = f"line {i + 1}: SEARCH block{f' for {path}' if path else ''}"
        if problem:
            problems.append(f"{where}: {problem}; it was ignored")
        elif path is None:
            problems.append(f"{where}: no file path; put the path on its own line just above "
                            "the block (or above its opening fence)")
        else:
            edits.append(FileEdit(path, _joined(search), _joined(replace)))
        i = after
    return ParsedEdits(tuple(edits), tuple(problems))


def _reads_as_search_replace(lines: list[str]) -> bool:
    """Whether a fenced block opens with a SEARCH marker: a small model asked for whole files
    sometimes answers in aider's format, and no real file starts with that marker."""
    return any(_SEARCH.match(line) and i > 0 and _FENCE.match(lines[i - 1].strip())
               for i, line in enumerate(lines))


def parse_edits(text: str, edit_format: str) -> ParsedEdits:
    """Read a model's answer in ``edit_format`` (or in SEARCH/REPLACE blocks when whole files
    were asked for but the answer is plainly blocks). Raises ``InvalidInputError`` only for an
    unknown format (a caller's bug); everything wrong with the answer is in ``problems``."""
    if edit_format not in EDIT_FORMATS:
        raise InvalidInputError("edit_format", f"{edit_format!r} is not an edit format; use one "
                                f"of {', '.join(EDIT_FORMATS)}")
    lines = text.splitlines()
    whole = edit_format == EDIT_FORMAT_WHOLE and not _reads_as_search_replace(lines)
    parsed = _parse_whole(lines) if whole else _parse_search_replace(lines)
    if parsed.edits or parsed.problems:
        return parsed
    expected = ("a path line, then the file in a fenced code block" if whole else
                "a path line, then <<<<<<< SEARCH / ======= / >>>>>>> REPLACE")
    return ParsedEdits((), (f"the answer contains no edits (expected {expected})",))
