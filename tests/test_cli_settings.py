"""The CLI names a bad setting instead of printing a traceback."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(("toml", "names"), [
    ('[[windows]]\ncron = "0 99 * * *"\nend = "07:00"\n', ["windows[0].cron", "99"]),
    ('[[windows]]\nstart = "22:00"\nend = "07:00"\ntz = "Mars/Olympus"\n', ["windows[0].tz", "Mars/Olympus"]),
    ('[[windows]]\nstart = "22:00"\nend = "22:00"\n', ["windows[0]", "zero"]),
])
def test_bad_window_settings_are_named_and_exit_2(tmp_path, toml, names):
    config = tmp_path / "nightshift.toml"
    config.write_text(toml)
    env = {"NIGHTSHIFT_CONFIG": str(config), "NIGHTSHIFT_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "nightshift", "status"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for name in names:
        assert name in done.stderr
