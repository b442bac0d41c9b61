"""Probes: each one on a double of what it reads (commands, /proc, NVML), plus the real
NVML binding where it is installed (no GPU here: it must answer 'unknown', not crash)."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scheduler.settings import YieldSpec
from workers.probes import (
    FileProbe,
    LoadProbe,
    LogindProbe,
    NvmlDevice,
    NvmlProbe,
    ProgramsProbe,
    X11IdleProbe,
    make_probes,
    own_pids,
    run_command,
)


def commands(table):
    def run(args):
        return table.get(" ".join(args), (1, "unknown command"))
    return run


SESSIONS = {
    "loginctl list-sessions --no-legend": (0, "  3 1000 anna seat0 tty2\n c1 120 gdm seat0 tty1\n"),
    "loginctl show-session c1 -p IdleHint -p IdleSinceHint -p Active -p Class": (
        0, "IdleHint=no\nIdleSinceHint=0\nActive=yes\nClass=greeter\n"),
}


def test_logind_active_user_session_is_the_owner():
    table = {**SESSIONS, "loginctl show-session 3 -p IdleHint -p IdleSinceHint -p Active -p Class": (
        0, "IdleHint=no\nIdleSinceHint=0\nActive=yes\nClass=user\n")}
    reading = LogindProbe(commands(table)).read()
    assert reading.active is True and "session 3" in reading.detail


def test_logind_idle_session_reports_how_long():
    table = {**SESSIONS, "loginctl show-session 3 -p IdleHint -p IdleSinceHint -p Active -p Class": (
        0, "IdleHint=yes\nIdleSinceHint=1700000000000000\nActive=yes\nClass=user\n")}
    reading = LogindProbe(commands(table), clock=lambda: 1_700_000_900.0).read()
    assert reading.active is False and reading.idle_s == pytest.approx(900.0)


def test_logind_missing_is_unknown():
    reading = LogindProbe(commands({})).read()
    assert reading.active is None and "loginctl unavailable" in reading.detail


def test_real_loginctl_never_raises():
    assert LogindProbe().read().probe == "logind"


def test_x11_idle_time():
    probe = X11IdleProbe(active_within_s=60, run=commands({"xprintidle": (0, "12000\n")}), display=":0")
    assert probe.read().active is True and probe.read().idle_s == 12.0
    probe = X11IdleProbe(active_within_s=60, run=commands({"xprintidle": (0, "600000\n")}), display=":0")
    assert probe.read().active is False


def test_x11_without_display_or_tool_is_unknown():
    assert X11IdleProbe(display="").read().active is None
    assert X11IdleProbe(run=commands({}), display=":0").read().active is None


def test_programs_found_in_proc(tmp_path):
    for pid, comm in [(11, "bash"), (12, "steam"), (13, "Blender")]:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
    reading = ProgramsProbe(["steam", "blender"], root=tmp_path).read()
    assert reading.active and reading.detail == "blender (pid 13), steam (pid 12)"
    assert ProgramsProbe(["obs"], root=tmp_path).read().active is False


def test_load_probe():
    assert LoadProbe(2.0, loadavg=lambda: (3.5, 1.0, 1.0)).read().active is True
    assert LoadProbe(2.0, loadavg=lambda: (0.5, 1.0, 1.0)).read().active is False


def test_file_probe(tmp_path):
    probe = FileProbe(tmp_path / "owner-here")
    assert probe.read().active is False
    probe.path.touch()
    assert probe.read().active is True


@dataclass
class FakeDevice:
    pids: set = field(default_factory=set)

    def process_ids(self):
        return self.pids

    def utilisation_pct(self):
        return 87


def test_nvml_foreign_processes_mean_the_owner_uses_the_gpu():
    device = FakeDevice({100, 200, 300})
    probe = NvmlProbe(device=lambda _i: device, ours=lambda: {100})
    reading = probe.read()
    assert reading.active is True and "[200, 300]" in reading.detail and "87%" in reading.detail
    device.pids = {100}
    assert probe.read().active is False


def test_nvml_without_driver_is_unknown_and_tried_once():
    tries = []

    def broken(index):
        tries.append(index)
        raise RuntimeError("NVML unavailable: NVML Shared Library Not Found")

    probe = NvmlProbe(device=broken)
    assert probe.read().active is None and probe.read().active is None
    assert tries == [0] and "Not Found" in probe.read().detail


def test_real_nvml_binding_on_this_machine():
    try:
        device = NvmlDevice(0)
    except RuntimeError as exc:  # no GPU or no binding: the probe says unknown
        assert NvmlProbe().read().active is None
        assert "NVML" in str(exc) or "nvidia-ml-py" in str(exc)
        return
    assert device.memory_used_bytes() is not None  # a GPU machine: real numbers


def test_own_pids_include_children():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        ours = own_pids()
        assert os.getpid() in ours and child.pid in ours and 1 not in ours
    finally:
        child.kill()
        child.wait()


def test_make_probes_from_settings(tmp_path):
    spec = YieldSpec(probes=["programs", "load", "file"], max_load=4, presence_file=str(tmp_path / "f"))
    assert [p.name for p in make_probes(spec)] == ["programs", "load", "file"]


@pytest.mark.parametrize("spec, words", [
    ({"probes": ["mouse"]}, "unknown probe 'mouse'"),
    ({"probes": ["file"]}, "presence_file"),
    ({"probes": ["load"]}, "max_load"),
])
def test_bad_probe_settings(spec, words):
    with pytest.raises(ValueError, match=words):
        YieldSpec(**spec)


def test_run_command_for_a_missing_program():
    assert run_command(["no-such-program-xyz"])[0] == 127
