import shutil
import subprocess
from pathlib import Path

import pytest

from jobs.errors import InvalidInputError
from jobs.patch.edits import (
    EDIT_FORMAT_SEARCH_REPLACE,
    EDIT_FORMAT_WHOLE,
    ApplyResult,
    FileEdit,
    apply_edits,
    choose_edit_format,
    normalise_diff,
    parse_edits,
)

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


# --- applying ---------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text(
        "class App:\n    def run(self):\n        return 1\n\n"
        "    def stop(self):\n        return 0\n")
    (root / "README.md").write_text("# App\n")
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_search_replace_and_whole_file_edits_apply(repo):
    result = apply_edits(repo, [
        FileEdit("src/app.py", "        return 1\n", "        return 2\n"),
        FileEdit("docs/new/guide.md", None, "# Guide\n"),
        FileEdit("src/new.py", "", "x = 1\n"),
    ])
    assert result == ApplyResult(("src/app.py", "docs/new/guide.md", "src/new.py"), ())
    assert result.ok
    assert "return 2" in (repo / "src/app.py").read_text()
    assert (repo / "docs/new/guide.md").read_text() == "# Guide\n"
    assert (repo / "src/new.py").read_text() == "x = 1\n"


def test_edits_to_one_file_apply_in_order(repo):
    result = apply_edits(repo, [FileEdit("src/app.py", "return 1\n", "return 2\n"),
                                FileEdit("./src/app.py", "return 2\n", "return 3\n")])
    assert result.applied == ("src/app.py",)
    assert "return 3" in (repo / "src/app.py").read_text()


def test_a_search_with_slipped_indentation_matches_and_the_replacement_is_reindented(repo):
    search = "def stop(self):  \n    return 0\n"
    replace = "def stop(self):\n    self.stopped = True\n    return 0\n"
    assert apply_edits(repo, [FileEdit("src/app.py", f"\n{search}\n", replace)]).ok
    assert (repo / "src/app.py").read_text().endswith(
        "    def stop(self):\n        self.stopped = True\n        return 0\n")


def test_an_exact_match_must_start_a_line(repo):
    # 'App' only occurs after '# ', so replacing it would splice into the middle of a line.
    assert apply_edits(repo, [FileEdit("README.md", "App\n", "Nightshift\n")]).failures == (
        "README.md: SEARCH block not found (its first line: 'App'); copy the old lines exactly",)


def test_a_search_that_is_not_found_names_the_path_and_first_line(repo):
    before = _tree(repo)
    result = apply_edits(repo, [FileEdit("src/app.py", "\n  def missing(self):\n", "x\n")])
    assert not result.ok and result.applied == ()
    assert result.failures == ("src/app.py: SEARCH block not found (its first line: "
                               "'def missing(self):'); copy the old lines exactly",)
    assert _tree(repo) == before


def test_an_ambiguous_search_is_a_failure(repo):
    result = apply_edits(repo, [FileEdit("src/app.py", "        return", "        yield")])
    assert result.applied == ()
    assert result.failures == ("src/app.py: SEARCH block matches 2 places (its first line: "
                               "'return'); include more lines so it matches once",)


def test_an_ambiguous_whitespace_tolerant_search_is_a_failure(repo):
    (repo / "b.py").write_text("if a:\n    pass\nif b:\n  pass\n")
    (failure,) = apply_edits(repo, [FileEdit("b.py", "pass\n", "return\n")]).failures
    assert failure == ("b.py: SEARCH block matches 2 places (its first line: 'pass'); "
                       "include more lines so it matches once")


def test_a_search_in_a_missing_file_fails_and_an_empty_search_on_an_existing_file_fails(repo):
    result = apply_edits(repo, [FileEdit("nope.py", "x\n", "y\n"),
                                FileEdit("README.md", "", "y\n")])
    assert len(result.failures) == 2
    assert result.failures[0].startswith("nope.py: file does not exist")
    assert result.failures[1].startswith("README.md: the SEARCH block is empty")


@pytest.mark.parametrize("path, expected", [
    ("../outside.py", "../outside.py: path escapes the repository"),
    ("src/../../outside.py", "src/../../outside.py: path escapes the repository"),
    ("/etc/passwd", "/etc/passwd: absolute paths are not allowed"),
    ("C:\\temp\\x.py", "C:\\temp\\x.py: absolute paths are not allowed"),
    (".git/hooks/pre-commit", ".git/hooks/pre-commit: files under .git cannot be edited"),
    ("", "an edit has no file path"),
    (".", ".: names the repository root"),
    ("src", "src: is a directory"),
    ("a\0b", "'a\\x00b': cannot be used as a path"),
])
def test_paths_outside_the_repository_are_failures_never_writes(repo, path, expected):
    before = _tree(repo)
    result = apply_edits(repo, [FileEdit(path, None, "owned\n")])
    assert result.applied == () and result.failures[0].startswith(expected)
    assert _tree(repo) == before


def test_a_symlink_pointing_out_of_the_repository_is_refused(repo, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("keep\n")
    (repo / "link").symlink_to(outside)
    (repo / "file_link").symlink_to(outside / "secret.txt")
    (repo / "dangling").symlink_to(outside / "new.txt")
    result = apply_edits(repo, [FileEdit("link/secret.txt", None, "owned\n"),
                                FileEdit("file_link", "keep\n", "owned\n"),
                                FileEdit("dangling", None, "owned\n")])
    assert result.applied == ()
    assert all("escapes the repository" in f for f in result.failures) and len(result.failures) == 3
    assert (outside / "secret.txt").read_text() == "keep\n"
    assert not (outside / "new.txt").exists()


def test_a_symlink_inside_the_repository_is_followed(repo):
    (repo / "alias.py").symlink_to(repo / "src" / "app.py")
    assert apply_edits(repo, [FileEdit("alias.py", "return 1\n", "return 5\n")]).ok
    assert (repo / "alias.py").is_symlink() and "return 5" in (repo / "src/app.py").read_text()


def test_one_failing_edit_means_nothing_is_written(repo):
    before = _tree(repo)
    result = apply_edits(repo, [
        FileEdit("src/app.py", "return 1\n", "return 2\n"),
        FileEdit("new/dir/file.py", None, "x\n"),
        FileEdit("README.md", "not there\n", "x\n"),
    ])
    assert result.applied == () and len(result.failures) == 1
    assert _tree(repo) == before and not (repo / "new").exists()


def test_a_write_error_rolls_back_staged_files_and_new_directories(repo):
    before = _tree(repo)
    # README.md is a file, so nothing can be created under it; that shows only when writing.
    result = apply_edits(repo, [FileEdit("fresh/deep/x.py", None, "x\n"),
                                FileEdit("src/app.py", "return 1\n", "return 2\n"),
                                FileEdit("README.md/x.py", None, "x\n")])
    assert result.applied == ()
    assert result.failures[0].startswith("README.md/x.py: could not be written")
    assert _tree(repo) == before and not (repo / "fresh").exists()


def test_no_change_is_not_ok(repo):
    result = apply_edits(repo, [FileEdit("README.md", None, "# App\n")])
    assert result == ApplyResult((), ()) and not result.ok


def test_crlf_line_endings_and_the_file_mode_are_kept(repo):
    script = repo / "run.sh"
    script.write_bytes(b"#!/bin/sh\r\necho one\r\n")
    script.chmod(0o755)
    assert apply_edits(repo, [FileEdit("run.sh", "echo one\n", "echo two\n")]).ok
    assert script.read_bytes() == b"#!/bin/sh\r\necho two\r\n"
    assert script.stat().st_mode & 0o777 == 0o755


def test_a_binary_file_is_a_failure(repo):
    (repo / "blob.bin").write_bytes(b"\xff\xfe\x00")
    (failure,) = apply_edits(repo, [FileEdit("blob.bin", None, "x\n")]).failures
    assert failure == "blob.bin: is not UTF-8 text, so it cannot be edited as text"


# --- normalising diffs ------------------------------------------------------------------------

DIFF_A = """\
diff --git a/src/app.py b/src/app.py
index 3b18e51..a1c2d3f 100644
--- a/src/app.py
+++ b/src/app.py
@@ -10,4 +10,4 @@ class App:
     def run(self):
-        return 1
+        return 2
 
     def stop(self):
"""

DIFF_B = """\
diff --git a/src/app.py b/src/app.py
index 3b18e51..9f9e0aa 100644
--- a/src/app.py
+++ b/src/app.py
@@ -1,3 +1,4 @@
+
 import os
 
 class App:
@@ -12,4 +13,4 @@ class App:
     def run(self):
-        return 1
+        return 2   
 
     def stop(self):
\\ No newline at end of file
"""


def test_equivalent_diffs_with_different_line_numbers_normalise_equal():
    assert normalise_diff(DIFF_A) == normalise_diff(DIFF_B)
    assert normalise_diff(DIFF_A) == ("diff --git a/src/app.py b/src/app.py\n--- a/src/app.py\n"
                                      "+++ b/src/app.py\n-        return 1\n+        return 2\n")


def test_different_changes_normalise_differently():
    assert normalise_diff(DIFF_A) != normalise_diff(DIFF_A.replace("+        return 2",
                                                                   "+        return 3"))


def test_a_removed_line_that_looks_like_a_file_header_stays_a_change():
    diff = "--- a/x.sql\n+++ b/x.sql\n@@ -1,2 +1,1 @@\n--- a comment\n keep\n"
    assert normalise_diff(diff) == "--- a/x.sql\n+++ b/x.sql\n--- a comment\n"


def test_whitespace_only_and_blank_only_diffs_normalise_to_nothing():
    diff = "--- a/x\n+++ b/x\n@@ -1,2 +1,3 @@\n-a  \n+a\n \n+\n"
    assert normalise_diff(diff) == ""


def test_a_new_empty_file_is_kept():
    diff = "diff --git a/e b/e\nnew file mode 100644\nindex 0000000..e69de29\n"
    assert normalise_diff(diff) == "diff --git a/e b/e\nnew file mode 100644\n"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_real_git_diffs_of_the_same_change_compare_equal(tmp_path):
    def diff_after(name: str, prefix: str) -> str:
        root = tmp_path / name
        root.mkdir()
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root)]
        body = "".join(f"line {n}\n" for n in range(30))
        (root / "f.py").write_text(body)
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", "base"], check=True)
        (root / "f.py").write_text(prefix + body.replace("line 20\n", "line twenty\n"))
        return subprocess.run([*git, "diff"], check=True, capture_output=True, text=True).stdout

    plain, shifted = diff_after("a", ""), diff_after("b", "\n\n")
    assert plain != shifted
    assert normalise_diff(plain) == normalise_diff(shifted)
