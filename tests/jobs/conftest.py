import shutil

import pytest

from jobs.patch.sandbox import BubblewrapSandbox
from tests.conftest import require


@pytest.fixture(scope="session")
def sandbox() -> BubblewrapSandbox:
    """The real bubblewrap sandbox; skipped where bwrap is missing (failed when CI is set)."""
    require(shutil.which("bwrap") is not None, "bubblewrap is not installed (apt-get install bubblewrap)")
    return BubblewrapSandbox()
