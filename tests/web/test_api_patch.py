"""Registering repositories and submitting TODO lists through the API, with each bad input."""

import subprocess

import pytest

from tests.jobs.patch_sample import TEST_COMMAND, make_sample_repo


@pytest.fixture
def sample(tmp_path):
    return make_sample_repo(tmp_path / "sample")


def _register(client, source, name="sample", **extra):
    return client.post("/api/repos", json={"name": name, "source": str(source), **extra})


def _todo(client, text, repo="sample", model="tiny"):
    return client.post("/api/todos", json={"repo": repo, "model": model, "text": text})


def test_register_detects_pytest_and_queues_one_task_per_item(client, sample):
    repo = _register(client, sample).json()
    assert repo["test_command"] == "python3 -m pytest -q -rA" and repo["path"] == str(sample)
    resp = _todo(client, "# tonight\n- fix add\n  it subtracts\n- [x] done already\n1. speed up mul\n")
    assert resp.status_code == 201, resp.text
    ids = resp.json()["task_ids"]
    assert len(ids) == 2 and resp.json()["warnings"] == []
    task = client.get(f"/api/tasks/{ids[0]}").json()
    assert task["kind"] == "patch" and task["input"]["item"]["body"] == "it subtracts"
    assert task["input"]["item"]["slug"] == "fix-add"


def test_git_url_is_cloned_into_the_data_dir(client, sample, settings):
    repo = _register(client, f"file://{sample}", name="cloned", test_command=TEST_COMMAND).json()
    assert repo["path"] == str(settings.data_dir / "repos" / "cloned")
    assert repo["origin_url"] == f"file://{sample}"


def test_path_that_does_not_exist_is_refused(client, tmp_path):
    resp = _register(client, tmp_path / "nowhere")
    assert resp.status_code == 422 and "does not exist" in resp.json()["detail"]["message"]


def test_directory_that_is_not_a_git_repository_is_refused(client, tmp_path):
    (tmp_path / "plain").mkdir()
    resp = _register(client, tmp_path / "plain")
    assert resp.status_code == 422 and "not a git repository" in resp.json()["detail"]["message"]


def test_repository_without_a_detectable_test_command_needs_one(client, sample):
    (sample / "pytest.ini").unlink()
    subprocess.run(["git", "mv", "tests", "checks"], cwd=sample, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "mv"], cwd=sample, check=True)
    resp = _register(client, sample)
    assert resp.status_code == 422
    assert resp.json()["detail"]["field"] == "test_command" and "--test-command" in resp.json()["detail"]["message"]


def test_duplicate_repository_name_is_refused(client, sample):
    _register(client, sample)
    assert "already registered" in _register(client, sample).json()["detail"]["message"]


def test_empty_todo_list_is_refused(client, sample):
    _register(client, sample)
    resp = _todo(client, "\n# just a heading\n")
    assert resp.status_code == 422 and resp.json()["detail"]["field"] == "todo"


def test_unknown_repository_lists_the_registered_ones(client, sample):
    _register(client, sample)
    resp = _todo(client, "- fix add", repo="other")
    assert resp.status_code == 422 and "sample" in resp.json()["detail"]["message"]


def test_unknown_model_is_refused(client, sample):
    _register(client, sample)
    assert _todo(client, "- fix add", model="nope").status_code == 422


def test_dirty_working_tree_is_snapshotted_at_head_and_left_alone(client, sample):
    _register(client, sample)
    (sample / "calc.py").write_text("# my unsaved work\n")
    resp = _todo(client, "- fix add")
    assert resp.status_code == 201
    assert "uncommitted changes" in resp.json()["warnings"][0]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=sample, capture_output=True, text=True).stdout.strip()
    assert resp.json()["base"] == head
    assert (sample / "calc.py").read_text() == "# my unsaved work\n"


def test_a_bad_ready_by_time_is_refused(client, sample):
    _register(client, sample)
    for deadline, field in (("tomorrow", "deadline"), ("2001-01-01T07:00:00+00:00", "deadline")):
        resp = client.post("/api/todos", json={"repo": "sample", "model": "tiny", "text": "- a", "deadline": deadline})
        assert resp.status_code == 422, resp.text
        detail = resp.json()["detail"]
        assert (detail["field"] if isinstance(detail, dict) else detail[0]["loc"][-1]) == field
