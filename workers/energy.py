"""Energy per attempt, from the GPU's own counter where it has one.

Methods, recorded on the attempt row with the value:

- ``nvml-counter``: NVML's total-energy counter (Volta and later), read at start and end;
- ``power-integral``: power draw sampled every ``sample_s`` and integrated (trapezoids);
- ``unavailable``: no NVML here; the energy is left empty, never a silent zero.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

NVML_COUNTER = "nvml-counter"
POWER_INTEGRAL = "power-integral"
UNAVAILABLE = "unavailable"


class PowerSource(Protocol):
    def energy_mj(self) -> int | None: ...

    def power_mw(self) -> int | None: ...


class Measurement:
    """One running measurement; ``stop()`` gives (joules or None, method)."""

    def __init__(self, source: PowerSource | None, sample_s: float, clock: Callable[[], float]) -> None:
        self._source, self._clock, self._sample_s = source, clock, sample_s
        self._start_mj = source.energy_mj() if source is not None else None
        self._joules = 0.0
        self._last: tuple[float, float] | None = None  # (time, watts)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._start_mj is not None:
            self.method = NVML_COUNTER
        elif source is not None and source.power_mw() is not None:
            self.method = POWER_INTEGRAL
            self.sample()
            self._thread = threading.Thread(target=self._sample_forever, name="energy", daemon=True)
            self._thread.start()
        else:
            self.method = UNAVAILABLE

    def sample(self) -> None:
        """Add one power reading to the integral (the sampling thread calls this)."""
        milliwatts = self._source.power_mw()
        if milliwatts is None:
            return
        now, watts = self._clock(), milliwatts / 1000
        if self._last is not None:
            self._joules += (now - self._last[0]) * (watts + self._last[1]) / 2
        self._last = (now, watts)

    def _sample_forever(self) -> None:
        while not self._stop.wait(self._sample_s):
            self.sample()

    def stop(self) -> tuple[float | None, str]:
        if self.method == NVML_COUNTER:
            end = self._source.energy_mj()
            return ((end - self._start_mj) / 1000 if end is not None else None), self.method
        if self.method == POWER_INTEGRAL:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self.sample()
            return self._joules, self.method
        return None, UNAVAILABLE


class EnergyMeter:
    """Makes a ``Measurement`` per attempt from a power source found lazily (NVML's device)."""

    def __init__(self, source: Callable[[], PowerSource | None] = lambda: None, sample_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._source, self._sample_s, self._clock = source, sample_s, clock

    def start(self) -> Measurement:
        return Measurement(self._source(), self._sample_s, self._clock)
