"""Git operations on the user's repository. The user's working tree and current branch are
never touched: all work happens in detached worktrees under Nightshift's workspace, and
results land on new branches."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from jobs.errors import RepositoryError

_GIT_IDENTITY = ["-c", "user.name=Nightshift", "-c", "user.email=nightshift@localhost",
                 "-c", "commit.gpgsign=false"]


class GitError(RepositoryError):
    def __init__(self, args: list[str], output: str) -> None:
        super().__init__("repository", f"git {' '.join(args)} failed: {output.strip()[-500:]}")


def git(repo: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *_GIT_IDENTITY, *args], cwd=repo, capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode != 0:
        raise GitError(list(args), proc.stderr or proc.stdout)
    return proc.stdout


@dataclass(frozen=True)
class RepoSnapshot:
    root: Path
    head: str  # the commit every worktree starts from
    dirty: bool  # uncommitted changes exist; they are left alone and not part of the snapshot


def inspect_repository(path: Path) -> RepoSnapshot:
    """Check that ``path`` is a git repository with at least one commit."""
    if not path.exists():
        raise RepositoryError("path", f"{path} does not exist; give the path of a git repository")
    if not path.is_dir():
        raise RepositoryError("path", f"{path} is not a directory")
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, text=True)
    if top.returncode != 0:
        raise RepositoryError("path", f"{path} is not a git repository (git init, or give the "
                              "repository's top directory)")
    root = Path(top.stdout.strip())
    head = git(root, "rev-parse", "--verify", "-q", "HEAD", check=False).strip()
    if not head:
        raise RepositoryError("path", f"{root} has no commits yet; commit once so Nightshift has a base")
    dirty = bool(git(root, "status", "--porcelain", "--untracked-files=no").strip())
    return RepoSnapshot(root, head, dirty)


def add_worktree(repo: Path, target: Path, commit: str) -> Path:
    remove_worktree(repo, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    git(repo, "worktree", "add", "--detach", "--force", str(target), commit)
    return target


def remove_worktree(repo: Path, target: Path) -> None:
    if target.exists():
        git(repo, "worktree", "remove", "--force", str(target), check=False)
        shutil.rmtree(target, ignore_errors=True)
    git(repo, "worktree", "prune", check=False)


def remove_workspace(repo: Path, workspace: Path) -> None:
    """Remove every worktree under ``workspace`` and the folder itself."""
    if workspace.exists():
        for child in workspace.iterdir():
            remove_worktree(repo, child)
        shutil.rmtree(workspace, ignore_errors=True)
    git(repo, "worktree", "prune", check=False)


def diff_worktree(worktree: Path) -> str:
    git(worktree, "add", "--all", "--intent-to-add")
    return git(worktree, "diff", "--no-color", "--no-ext-diff")


def list_files(root: Path, limit: int = 2000) -> list[str]:
    return git(root, "ls-files").splitlines()[:limit]


def commit_to_branch(repo: Path, workspace: Path, base: str, diff: str, branch: str, message: str) -> str:
    """Apply ``diff`` on ``base`` and commit it to a new branch (a free name derived from
    ``branch``). Returns the branch name. The user's checkout is not touched."""
    name = branch
    for suffix in range(2, 100):
        if not git(repo, "rev-parse", "--verify", "-q", f"refs/heads/{name}", check=False).strip():
            break
        name = f"{branch}-{suffix}"
    tree = add_worktree(repo, workspace / "commit", base)
    try:
        patch = workspace / "chosen.patch"
        patch.write_text(diff)
        git(tree, "apply", "--whitespace=nowarn", str(patch))
        git(tree, "add", "--all")
        git(tree, "commit", "-q", "-m", message)
        git(repo, "branch", name, git(tree, "rev-parse", "HEAD").strip())
    finally:
        remove_worktree(repo, tree)
    return name


def _checked_out_at(repo: Path, branch: str) -> Path | None:
    """The worktree (the user's own checkout included) that has ``branch`` checked out."""
    path = None
    for line in git(repo, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            path = Path(line.removeprefix("worktree "))
        elif line == f"branch refs/heads/{branch}":
            return path
    return None


def _tip(repo: Path, branch: str) -> str:
    return git(repo, "rev-parse", "--verify", "-q", f"refs/heads/{branch}", check=False).strip()


def merge_branch(repo: Path, branch: str, into: str, message: str) -> str:
    """Merge ``branch`` into the local branch ``into`` and return ``into``'s new commit.

    A missing ``into`` is created at ``branch``. Where ``into`` is checked out (the user's own
    checkout, say ``main``), the merge happens there so the files follow, and only when that
    checkout has no uncommitted changes. Elsewhere the merge is computed without a working tree
    (``git merge-tree``) and the branch moved only if nobody moved it meanwhile. Conflicts
    leave everything as it was."""
    if not into or git(repo, "check-ref-format", "--branch", into, check=False).strip() != into:
        raise RepositoryError("into", f"{into!r} is not a valid branch name")
    source = _tip(repo, branch)
    if not source:
        raise RepositoryError("branch", f"branch {branch} no longer exists in {repo}")
    target = _tip(repo, into)
    if not target:
        git(repo, "branch", into, source)
        return source
    if subprocess.run(["git", "merge-base", "--is-ancestor", source, target], cwd=repo).returncode == 0:
        return target  # already merged
    checkout = _checked_out_at(repo, into)
    if checkout is not None:
        return _merge_in_checkout(checkout, branch, into, message)
    proc = subprocess.run(["git", "merge-tree", "--write-tree", "--name-only", target, source],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    if proc.returncode == 1:
        files = [f for f in proc.stdout.splitlines()[1:] if f and not f.startswith(("Auto-merging", "CONFLICT"))]
        raise RepositoryError("into", f"{branch} conflicts with {into} in {', '.join(files[:10])}; "
                              "merge it by hand or choose another branch")
    if proc.returncode != 0:
        raise GitError(["merge-tree", target, source], proc.stderr)
    tree = proc.stdout.splitlines()[0]
    commit = git(repo, "commit-tree", tree, "-p", target, "-p", source, "-m", message).strip()
    git(repo, "update-ref", f"refs/heads/{into}", commit, target)
    return commit


def _merge_in_checkout(checkout: Path, branch: str, into: str, message: str) -> str:
    if git(checkout, "status", "--porcelain", "--untracked-files=no").strip():
        raise RepositoryError("into", f"{into} is checked out in {checkout} with uncommitted changes; "
                              "commit or stash them first, or merge into another branch")
    proc = subprocess.run(["git", *_GIT_IDENTITY, "merge", "--no-ff", "--no-edit", "-m", message, branch],
                          cwd=checkout, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        git(checkout, "merge", "--abort", check=False)
        raise RepositoryError("into", f"{branch} does not merge cleanly into {into}: "
                              f"{(proc.stdout + proc.stderr).strip()[-400:]}")
    return git(checkout, "rev-parse", "HEAD").strip()


_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


def keyword_rank(root: Path, files: list[str], text: str, top: int) -> list[str]:
    """Files ranked by how many of the item's words appear in their path and content."""
    words = {w.lower() for w in _WORDS.findall(text)}
    scored = []
    for name in files:
        path = root / name
        try:
            content = path.read_text(errors="ignore")[:200_000].lower() if path.stat().st_size < 1_000_000 else ""
        except OSError:
            continue
        score = sum(3 for w in words if w in name.lower()) + sum(1 for w in words if w in content)
        if score:
            scored.append((-score, name))
    return [name for _, name in sorted(scored)[:top]]
