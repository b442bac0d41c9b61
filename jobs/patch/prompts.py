"""What the patch loop says to the model, and how it reads the localisation answer.

Prompts are cut to fit the model's context: about two characters a token is assumed, which
is conservative for code, and the engine still refuses a prompt that does not fit.
"""

from __future__ import annotations

import re
from pathlib import Path

from jobs.patch.edits import EDIT_FORMAT_WHOLE
from jobs.patch.state import Candidate, PatchItem

_CHARS_PER_TOKEN = 2
_SYMBOL = re.compile(r"^(?:async\s+)?(?:def|class)\s+(\w+)", re.MULTILINE)

Messages = tuple[dict[str, object], ...]


def char_budget(max_model_len: int, gen_tokens: int) -> int:
    return max(256, (max_model_len - gen_tokens) * _CHARS_PER_TOKEN - 200)


def _clip(text: str, budget: int) -> str:
    return text if len(text) <= budget else text[:budget] + "\n[... cut to fit the model's context]"


def repo_map(root: Path, files: list[str], budget: int) -> str:
    """One line per file, with the Python definitions it holds."""
    lines = []
    for name in files:
        symbols = ""
        if name.endswith(".py"):
            try:
                found = _SYMBOL.findall((root / name).read_text(errors="ignore")[:100_000])
            except OSError:
                found = []
            symbols = f": {', '.join(found[:12])}" if found else ""
        lines.append(f"{name}{symbols}")
    return _clip("\n".join(lines), budget)


def localise(item: PatchItem, the_map: str) -> Messages:
    return (
        {"role": "system", "content": "You find where in a repository a change must be made."},
        {"role": "user", "content": f"Repository files:\n{the_map}\n\nTask:\n{item.text}\n\n"
                                    "List the paths of the files to change, most relevant first, "
                                    "one per line, nothing else."},
    )


def read_localisation(answer: str, known: set[str]) -> list[str]:
    found = []
    for line in answer.splitlines():
        path = line.strip().strip("-*`'\" ").split(" ")[0].strip("`'\":,")
        if path in known and path not in found:
            found.append(path)
    return found


_FORMAT_HELP = {
    EDIT_FORMAT_WHOLE: "Answer with each changed file in full: its path on one line, then the "
                       "complete new content in a fenced code block.",
    "search-replace": "Answer with SEARCH/REPLACE blocks: the file path on one line, then\n"
                      "<<<<<<< SEARCH\n(exact existing lines)\n=======\n(new lines)\n>>>>>>> REPLACE",
}


def _sources(root: Path, files: list[str], budget: int) -> str:
    parts = []
    for name in files:
        try:
            parts.append(f"{name}\n```\n{(root / name).read_text(errors='replace')}\n```")
        except OSError:
            continue
    return _clip("\n\n".join(parts), budget)


def generate(item: PatchItem, root: Path, files: list[str], edit_format: str, budget: int) -> Messages:
    return (
        {"role": "system", "content": "You are a careful software engineer. Make the smallest "
                                      "change that does the task and keeps every test passing. "
                                      + _FORMAT_HELP[edit_format]},
        {"role": "user", "content": f"Task:\n{item.text}\n\nTest command: {item.test_command}\n\n"
                                    f"Relevant files:\n{_sources(root, files, budget)}"},
    )


def revise(item: PatchItem, root: Path, files: list[str], edit_format: str, budget: int,
           previous: Candidate) -> Messages:
    feedback = previous.tests.output_tail if previous.tests else "\n".join(previous.problems)
    first = generate(item, root, files, edit_format, budget // 2)
    return first + (
        {"role": "assistant", "content": _clip(previous.answer, budget // 4)},
        {"role": "user", "content": "That attempt did not work.\n"
                                    f"Problems: {'; '.join(previous.problems) or 'none'}\n"
                                    f"Review: {_clip(previous.critique, 1000) or 'none'}\n"
                                    f"Test output:\n{_clip(feedback, budget // 4)}\n\n"
                                    "Try again, in the same answer format."},
    )


def critique(item: PatchItem, candidate: Candidate, budget: int) -> Messages:
    tests = candidate.tests.output_tail if candidate.tests else ""
    return (
        {"role": "system", "content": "You review patches. Be brief and concrete."},
        {"role": "user", "content": f"Task:\n{item.text}\n\nPatch:\n{_clip(candidate.diff, budget // 2)}\n\n"
                                    f"Newly failing tests: {', '.join(candidate.newly_failing) or 'none'}\n"
                                    f"Test output:\n{_clip(tests, budget // 4)}\n\n"
                                    "Does the patch do the task? What is wrong with it, if anything?"},
    )
