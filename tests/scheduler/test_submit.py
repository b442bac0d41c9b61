import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from scheduler import InvalidSubmissionError, SubmissionTooLargeError, UnknownModelError, session_scope
from scheduler.models import Artifact, BatchLine, LineStatus
from scheduler.submit import submit_batch
from tests.conftest import batch_line


def _data(*lines) -> bytes:
    return "\n".join(json.dumps(l) if isinstance(l, dict) else l for l in lines).encode()


def test_submission_stores_good_lines_pending_and_bad_lines_as_errors(settings):
    receipt = submit_batch(settings, _data(batch_line("a"), "{oops", batch_line("b")), model="tiny")
    assert receipt.accepted == 2 and [e.line_no for e in receipt.rejected] == [2]
    with session_scope(settings.database_url) as s:
        lines = s.exec(select(BatchLine).order_by(BatchLine.line_no)).all()
        artifact = s.exec(select(Artifact)).one()
    assert [l.status for l in lines] == [LineStatus.PENDING, LineStatus.REJECTED, LineStatus.PENDING]
    assert (settings.data_dir / artifact.path).read_bytes().startswith(b'{"custom_id": "a"')
    assert len(artifact.sha256) == 64


def test_unknown_model_lists_the_configured_ones(settings):
    with pytest.raises(UnknownModelError, match="'gpt-4'.*tiny"):
        submit_batch(settings, _data(batch_line("a")), model="gpt-4")


def test_file_over_the_size_limit_is_refused(settings):
    with pytest.raises(SubmissionTooLargeError, match="limit is 65536 bytes"):
        submit_batch(settings, b"x" * (settings.max_batch_bytes + 1), model="tiny")


def test_empty_file_is_refused(settings):
    with pytest.raises(InvalidSubmissionError, match="empty"):
        submit_batch(settings, b"", model="tiny")


def test_file_with_no_valid_line_is_refused_with_every_line_error(settings):
    with pytest.raises(InvalidSubmissionError) as info:
        submit_batch(settings, _data("{bad", "[1]"), model="tiny")
    assert len(info.value.details) == 2 and "line 1" in info.value.details[0]


def test_deadline_in_the_past_is_refused(settings):
    with pytest.raises(InvalidSubmissionError, match="deadline"):
        submit_batch(settings, _data(batch_line("a")), model="tiny",
                     deadline_at=datetime.now(UTC) - timedelta(hours=1))
