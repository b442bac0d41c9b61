"""Energy per attempt: NVML's counter, else integrated power, else unavailable (never 0)."""

from dataclasses import dataclass

from workers.energy import NVML_COUNTER, POWER_INTEGRAL, UNAVAILABLE, EnergyMeter, Measurement


@dataclass
class Card:
    counter_mj: int | None = None
    power: int | None = None

    def energy_mj(self):
        return self.counter_mj

    def power_mw(self):
        return self.power


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_counter_difference_in_joules():
    card = Card(counter_mj=1_000_000)
    measurement = EnergyMeter(lambda: card).start()
    card.counter_mj += 2_500_000
    assert measurement.stop() == (2500.0, NVML_COUNTER)


def test_power_draw_is_integrated_when_there_is_no_counter():
    card, clock = Card(power=100_000), Clock()
    measurement = Measurement(card, sample_s=3600, clock=clock)  # the thread stays asleep
    clock.t = 10
    card.power = 300_000
    measurement.sample()  # 10 s from 100 W to 300 W: 2000 J
    clock.t = 20
    joules, method = measurement.stop()  # 10 s at 300 W: 3000 J more
    assert method == POWER_INTEGRAL and joules == 5000.0


def test_no_gpu_is_unavailable_not_zero():
    assert EnergyMeter().start().stop() == (None, UNAVAILABLE)
    assert EnergyMeter(lambda: Card()).start().stop() == (None, UNAVAILABLE)
