import pytest

from jobs.errors import InvalidInputError
from jobs.patch.edits import EDIT_FORMAT_SEARCH_REPLACE, EDIT_FORMAT_WHOLE, FileEdit, choose_edit_format, parse_edits

F = "```"


def _whole(text: str):
    return parse_edits(text, EDIT_FORMAT_WHOLE)


def _sr(text: str):
    return parse_edits(text, EDIT_FORMAT_SEARCH_REPLACE)


def _block(path: str, search: str, replace: str) -> str:
    return f"{path}\n{F}python\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n{F}\n"


# --- parsing whole files ----------------------------------------------------------------------


def test_whole_file_blocks_follow_their_path_line():
    answer = (f"Here is the fix.\n\nsrc/app.py\n{F}python\ndef f():\n    return 1\n{F}\n\n"
              f"README.md\n{F}\n# Title\n{F}\n")
    parsed = _whole(answer)
    assert parsed.edits == (FileEdit("src/app.py", None, "def f():\n    return 1\n"),
                            FileEdit("README.md", None, "# Title\n"))
    assert parsed.problems == ()


@pytest.mark.parametrize("before, info", [
    ("", "python src/app.py"),
    ("", "src/app.py"),
    ("File: src/app.py\n", "python"),
    ("**File:** `src/app.py`\n", "python"),
    ("`src/app.py`:\n", ""),
    ("### src/app.py\n", "py"),
])
def test_whole_file_path_may_be_in_the_info_string_or_a_file_line(before, info):
    parsed = _whole(f"Sure.\n{before}{F}{info}\nx = 1\n{F}\n")
    assert parsed.edits == (FileEdit("src/app.py", None, "x = 1\n"),)


def test_a_longer_fence_may_hold_a_shorter_one():
    parsed = _whole(f"docs/a.md\n````markdown\n{F}sh\nls\n{F}\n````\n")
    assert parsed.edits == (FileEdit("docs/a.md", None, f"{F}sh\nls\n{F}\n"),)


def test_a_code_block_without_a_path_is_a_problem_not_an_edit():
    parsed = _whole(f"Run this:\n{F}sh\nmake test\n{F}\n\na.py\n{F}\npass\n{F}\n")
    assert [e.path for e in parsed.edits] == ["a.py"]
    (problem,) = parsed.problems
    assert problem.startswith("line 2:") and "no file path" in problem


def test_a_prose_word_above_a_fence_is_not_taken_for_a_path():
    parsed = _whole(f"Updated:\n{F}\npass\n{F}\n")
    assert parsed.edits == () and "no file path" in parsed.problems[0]


def test_an_unterminated_whole_file_block_is_dropped_as_a_problem():
    parsed = _whole(f"a.py\n{F}python\ndef f():\n    return")
    assert parsed.edits == ()
    (problem,) = parsed.problems
    assert "line 2" in problem and "a.py" in problem and "never closed" in problem


def test_an_answer_with_no_edits_says_so():
    parsed = _whole("I could not find the bug.")
    assert parsed.edits == ()
    assert parsed.problems == ("the answer contains no edits (expected a path line, then the "
                               "file in a fenced code block)",)
    assert "SEARCH" in _sr("Done.").problems[0]


def test_a_whole_file_answer_given_as_search_replace_blocks_is_read_as_blocks():
    parsed = _whole(_block("a.py", "x\n", "y\n"))
    assert parsed.edits == (FileEdit("a.py", "x\n", "y\n"),) and parsed.problems == ()


def test_a_search_marker_inside_a_whole_file_is_content():
    content = "doc\n<<<<<<< SEARCH\n"
    assert _whole(f"a.md\n{F}\n{content}{F}\n").edits == (FileEdit("a.md", None, content),)


def test_an_unknown_edit_format_is_a_caller_error():
    with pytest.raises(InvalidInputError) as exc:
        parse_edits("", "diff")
    assert exc.value.field == "edit_format" and "search-replace" in exc.value.message


# --- parsing SEARCH/REPLACE -------------------------------------------------------------------


def test_search_replace_blocks_inside_fences():
    answer = "Change it:\n\n" + _block("src/app.py", "a = 1\n", "a = 2\n") + _block(
        "lib/b.py", "", "new = True\n")
    parsed = _sr(answer)
    assert parsed.edits == (FileEdit("src/app.py", "a = 1\n", "a = 2\n"),
                            FileEdit("lib/b.py", "", "new = True\n"))
    assert parsed.problems == ()


def test_search_replace_without_fences_and_with_the_path_in_the_info_string():
    answer = ("a.py\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n\n"
              f"{F}python b.py\n<<<<<<< SEARCH\np\n=======\nq\n>>>>>>> REPLACE\n{F}\n")
    assert _sr(answer).edits == (FileEdit("a.py", "x\n", "y\n"), FileEdit("b.py", "p\n", "q\n"))


def test_a_block_without_its_own_path_reuses_the_previous_one():
    answer = (f"a.py\n{F}\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n"
              "<<<<<<< SEARCH\nz\n=======\nw\n>>>>>>> REPLACE\n" + F + "\n"
              "And then the next part:\n"
              f"{F}\n<<<<<<< SEARCH\nu\n=======\nv\n>>>>>>> REPLACE\n{F}\n")
    assert [(e.path, e.search) for e in _sr(answer).edits] == [("a.py", "x\n"), ("a.py", "z\n"),
                                                                ("a.py", "u\n")]


def test_a_block_with_no_path_at_all_is_a_problem():
    parsed = _sr("<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n")
    assert parsed.edits == () and "no file path" in parsed.problems[0]


def test_a_missing_divider_is_a_problem_and_later_blocks_still_parse():
    answer = ("a.py\n<<<<<<< SEARCH\nx\ny\n>>>>>>> REPLACE\n"
              "b.py\n<<<<<<< SEARCH\np\n=======\nq\n>>>>>>> REPLACE\n")
    parsed = _sr(answer)
    assert parsed.edits == (FileEdit("b.py", "p\n", "q\n"),)
    (problem,) = parsed.problems
    assert problem.startswith("line 2: SEARCH block for a.py") and "'======='" in problem


def test_an_unterminated_block_is_a_problem():
    parsed = _sr("a.py\n<<<<<<< SEARCH\nx\n=======\ny\n")
    assert parsed.edits == ()
    assert "without '>>>>>>> REPLACE'" in parsed.problems[0] and "cut off" in parsed.problems[0]


def test_a_new_search_marker_inside_a_block_is_a_problem():
    parsed = _sr("a.py\n<<<<<<< SEARCH\nx\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n")
    assert parsed.edits == (FileEdit("a.py", "x\n", "y\n"),)
    assert "new SEARCH marker" in parsed.problems[0]


def test_edit_format_follows_model_size():
    assert choose_edit_format(None) == EDIT_FORMAT_WHOLE
    assert choose_edit_format(0.5) == EDIT_FORMAT_WHOLE
    assert choose_edit_format(6.9) == EDIT_FORMAT_WHOLE
    assert choose_edit_format(7) == EDIT_FORMAT_SEARCH_REPLACE
    assert choose_edit_format(70.0) == EDIT_FORMAT_SEARCH_REPLACE
    assert choose_edit_format(float("nan")) == EDIT_FORMAT_WHOLE
