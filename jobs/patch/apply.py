"""Applying parsed edits to a checkout: all or nothing, and never outside its root.

Applying never raises: each edit that cannot be applied (SEARCH text not found or found twice,
a path escaping the repository, an unreadable file) becomes a failure message, and then
nothing at all is written.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from jobs.patch.edits import FileEdit


@dataclass(frozen=True)
class ApplyResult:
    applied: tuple[str, ...]
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return bool(self.applied) and not self.failures


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
