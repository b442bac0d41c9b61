import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, settings):
    """Every scheduler test runs on SQLite and again on a real PostgreSQL server."""
    if request.param == "postgresql":
        settings.database_url = request.getfixturevalue("postgres_url")
    return settings
