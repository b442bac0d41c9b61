"""Merging an accepted item's branch into the branch the user names."""

import subprocess

import pytest

from jobs.errors import RepositoryError
from jobs.patch.repo import git, merge_branch
from tests.jobs.patch_sample import FIXED, make_sample_repo


def _branch_with(repo, name, path, content, base="main"):
    git(repo, "branch", name, base)
    tree = repo.parent / f"wt-{name.replace('/', '-')}"
    git(repo, "worktree", "add", "-q", str(tree), name)
    (tree / path).write_text(content)
    git(tree, "commit", "-qam", f"change {path}")
    git(repo, "worktree", "remove", str(tree))


@pytest.fixture
def repo(tmp_path):
    repo = make_sample_repo(tmp_path / "sample")
    _branch_with(repo, "nightshift/fix", "calc.py", FIXED)
    return repo


def _show(repo, ref, path):
    return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=repo, capture_output=True, text=True).stdout


def test_merging_into_the_checked_out_branch_updates_the_users_files(repo):
    commit = merge_branch(repo, "nightshift/fix", "main", "merge")
    assert (repo / "calc.py").read_text() == FIXED
    assert git(repo, "rev-parse", "main").strip() == commit
    assert len(git(repo, "rev-list", "--parents", "-n1", "main").split()) == 3  # a merge commit


def test_merging_into_a_branch_not_checked_out_leaves_the_working_tree_alone(repo):
    git(repo, "branch", "release")
    head_before = git(repo, "rev-parse", "HEAD").strip()
    merge_branch(repo, "nightshift/fix", "release", "merge")
    assert _show(repo, "release", "calc.py") == FIXED
    assert git(repo, "rev-parse", "HEAD").strip() == head_before and (repo / "calc.py").read_text() != FIXED


def test_a_new_branch_name_is_created_at_the_item(repo):
    merge_branch(repo, "nightshift/fix", "accepted/tonight", "merge")
    assert git(repo, "rev-parse", "accepted/tonight") == git(repo, "rev-parse", "nightshift/fix")


def test_a_dirty_checkout_is_refused_and_untouched(repo):
    (repo / "calc.py").write_text("# my unsaved work\n")
    with pytest.raises(RepositoryError, match="uncommitted changes") as err:
        merge_branch(repo, "nightshift/fix", "main", "merge")
    assert err.value.field == "into" and (repo / "calc.py").read_text() == "# my unsaved work\n"


def test_a_conflict_moves_nothing(repo):
    _branch_with(repo, "other", "calc.py", "def add(a, b):\n    return b + a  # theirs\n")
    before = git(repo, "rev-parse", "other").strip()
    with pytest.raises(RepositoryError, match="conflicts with other in calc.py"):
        merge_branch(repo, "nightshift/fix", "other", "merge")
    assert git(repo, "rev-parse", "other").strip() == before


def test_a_conflict_in_the_checkout_is_aborted(repo):
    (repo / "calc.py").write_text("def add(a, b):\n    return b + a  # mine\n")
    git(repo, "commit", "-qam", "mine")
    with pytest.raises(RepositoryError, match="does not merge cleanly"):
        merge_branch(repo, "nightshift/fix", "main", "merge")
    assert not git(repo, "status", "--porcelain").strip()


@pytest.mark.parametrize("bad", ["", "two words", "../x", "x..y", "-x"])
def test_invalid_branch_names_are_refused(repo, bad):
    with pytest.raises(RepositoryError) as err:
        merge_branch(repo, "nightshift/fix", bad, "merge")
    assert err.value.field == "into"
