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
Applying never raises either and never writes outside the root; a failure is a message.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

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


@dataclass(frozen=True)
class ApplyResult:
    applied: tuple[str, ...]
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return bool(self.applied) and not self.failures


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


# --- applying ---------------------------------------------------------------------------------


@dataclass
class _File:
    """One target file while a candidate is checked in memory, before anything is written."""

    name: str  # the path as the model named it, normalised
    root: Path
    target: Path  # resolved, inside the root
    original: str | None  # None: the file does not exist yet
    content: str | None
    crlf: bool
    mode: int


def _resolve(root: Path, path: str) -> tuple[str, Path] | str:
    """``(name, target)``, or a failure message when the path may not be written."""
    posix = path.strip().replace("\\", "/")
    if not posix:
        return "an edit has no file path"
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return f"{path}: absolute paths are not allowed; use a path relative to the repository root"
    if ".." in PurePosixPath(posix).parts:
        return f"{path}: path escapes the repository ('..' is not allowed)"
    target = (root / posix).resolve()
    if not target.is_relative_to(root):
        return f"{path}: path escapes the repository (it resolves to {target} through a symlink)"
    inside = target.relative_to(root).parts
    if not inside:
        return f"{path}: names the repository root, not a file"
    if inside[0] == ".git":
        # Hooks and config under .git run on the developer's machine: never the model's to edit.
        return f"{path}: files under .git cannot be edited"
    return os.path.normpath(posix), target


def _load(root: Path, name: str, target: Path) -> _File | str:
    if target.is_dir():
        return f"{name}: is a directory, not a file"
    if not target.exists():
        # New files get the usual permissions; staged files would otherwise keep mkstemp's 0600.
        return _File(name, root, target, None, None, False, 0o644)
    try:
        raw = target.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return f"{name}: is not UTF-8 text, so it cannot be edited as text"
    except OSError as exc:
        return f"{name}: cannot be read ({exc.strerror or exc})"
    # Match on '\n' only and restore CRLF on write, so an edit never rewrites every line ending.
    text = raw.replace("\r\n", "\n")
    mode = target.stat().st_mode & 0o7777
    return _File(name, root, target, text, text, "\r\n" in raw, mode)


def _lead(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _reindent(replace: str, search_lines: list[str], found: list[str]) -> str:
    """Shift REPLACE by the indent the SEARCH lines are uniformly off by (a model quoting a
    method without its class's indent), so the new lines land at the file's depth."""
    deltas = {len(_lead(f)) - len(_lead(s)) for s, f in zip(search_lines, found) if s.strip()}
    if len(deltas) != 1 or deltas == {0}:
        return replace
    delta = deltas.pop()
    pad = _lead(found[0])[:1] * delta
    lines = replace.splitlines(keepends=True)
    return "".join(line if not line.strip() else pad + line if delta > 0
                   else line[min(-delta, len(_lead(line))):] for line in lines)


def _substitute(content: str, search: str, replace: str) -> tuple[str | None, int]:
    """The content with ``search`` replaced, and how many places matched (only 1 replaces).
    An exact match must start a line; failing that, lines are compared stripped, so an
    indentation or trailing-space slip still finds the block."""
    exact = [m.start() for m in re.finditer(f"(?m)^(?={re.escape(search)})", content)]
    if len(exact) == 1:
        return content[: exact[0]] + replace + content[exact[0] + len(search):], 1
    if exact:
        return None, len(exact)
    lines = content.splitlines(keepends=True)
    search_lines = search.splitlines()
    keep = [i for i, line in enumerate(search_lines) if line.strip()]
    search_lines = search_lines[keep[0]: keep[-1] + 1]  # stray blank lines must not stop a match
    wanted, have = [s.strip() for s in search_lines], [f.strip() for f in lines]
    n = len(wanted)
    starts = [i for i in range(len(lines) - n + 1) if have[i:i + n] == wanted]
    if len(starts) != 1:
        return None, len(starts)
    at = starts[0]
    new = _reindent(replace, search_lines, lines[at:at + n])
    return "".join(lines[:at]) + new + "".join(lines[at + n:]), 1


def _first_line(search: str) -> str:
    line = next((ln.strip() for ln in search.splitlines() if ln.strip()), "")
    return line if len(line) <= 80 else line[:77] + "..."


def _apply_one(file: _File, edit: FileEdit) -> str | None:
    """Apply ``edit`` to ``file.content`` in memory; a failure message when it cannot be."""
    if edit.search is None:
        file.content = edit.replace
        return None
    if not edit.search.strip():
        if file.content is not None:
            return (f"{file.name}: the SEARCH block is empty but the file exists; quote the "
                    "lines to replace")
        file.content = edit.replace
        return None
    if file.content is None:
        return (f"{file.name}: file does not exist; a SEARCH block needs an existing file (an "
                "empty SEARCH block creates one)")
    new, matches = _substitute(file.content, edit.search, edit.replace)
    if new is None and matches == 0:
        return (f"{file.name}: SEARCH block not found (its first line: "
                f"{_first_line(edit.search)!r}); copy the old lines exactly")
    if new is None:
        return (f"{file.name}: SEARCH block matches {matches} places (its first line: "
                f"{_first_line(edit.search)!r}); include more lines so it matches once")
    file.content = new
    return None


def _stage(file: _File, made: list[Path]) -> Path:
    """Write ``file`` to a temporary sibling, creating missing directories (noted in ``made``,
    outermost first)."""
    missing = [p for p in file.target.parents if p.is_relative_to(file.root) and not p.exists()]
    for directory in reversed(missing):
        directory.mkdir()
        made.append(directory)
    assert file.content is not None
    text = file.content.replace("\n", "\r\n") if file.crlf else file.content
    fd, tmp = tempfile.mkstemp(dir=file.target.parent, prefix=f".{file.target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text.encode("utf-8"))
        os.chmod(tmp, file.mode)
    except OSError:
        os.unlink(tmp)
        raise
    return Path(tmp)


def _write_all(files: list[_File]) -> str | None:
    """Write every file to a temporary sibling and rename only once all are written, so a full
    disk or a permission error leaves the checkout as it was."""
    staged: list[tuple[Path, Path]] = []
    made: list[Path] = []
    for file in files:
        try:
            staged.append((_stage(file, made), file.target))
        except OSError as exc:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            for directory in reversed(made):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            return f"{file.name}: could not be written ({exc.strerror or exc})"
    for tmp, target in staged:
        os.replace(tmp, target)
    return None


def _open(root: Path, files: dict[Path, _File], path: str) -> _File | str:
    """The in-memory file ``path`` names (loaded on first use), or a failure message."""
    try:
        resolved = _resolve(root, path)
        if isinstance(resolved, str):
            return resolved
        name, target = resolved
        if target not in files:
            loaded = _load(root, name, target)
            if isinstance(loaded, str):
                return loaded
            files[target] = loaded
        return files[target]
    except (OSError, ValueError) as exc:  # a NUL byte or an over-long name from the model
        return f"{path!r}: cannot be used as a path ({exc})"


def _check(root: Path, edits: Sequence[FileEdit]) -> tuple[list[_File], list[str]]:
    files: dict[Path, _File] = {}
    failures: list[str] = []
    for edit in edits:
        file = _open(root, files, edit.path)
        failure = file if isinstance(file, str) else _apply_one(file, edit)
        if failure:
            failures.append(failure)
    return list(files.values()), failures


def apply_edits(root: Path, edits: Sequence[FileEdit]) -> ApplyResult:
    """Apply a candidate's edits under ``root``, all or nothing: every edit is checked in memory
    first and nothing is written unless all succeed. Edits to one file apply in order. Never
    raises for a bad edit and never writes outside ``root``."""
    root = Path(root).resolve()
    files, failures = _check(root, edits)
    if failures:
        return ApplyResult((), tuple(failures))
    changed = [f for f in files if f.content != f.original]
    failure = _write_all(changed)
    if failure:
        return ApplyResult((), (failure,))
    return ApplyResult(tuple(f.name for f in changed), ())


# --- comparing candidates ---------------------------------------------------------------------

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
