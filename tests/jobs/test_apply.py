from pathlib import Path

import pytest

from jobs.patch.apply import ApplyResult, apply_edits
from jobs.patch.edits import FileEdit

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
