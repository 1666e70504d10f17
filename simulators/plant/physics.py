"""Centrifugal pump physics with noise and a developing bearing fault.

Pure and deterministic for a given seed: the OPC UA plant simulator serves these values and the
model builder trains on them, so the demo model sees the same world it was trained on.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

__all__ = ["SIGNALS", "FaultPlan", "PumpReading", "PumpState"]

NOMINAL_SPEED_RPM = 1480.0
NOMINAL_PRESSURE_BAR = 4.5
HEALTHY_VIBRATION_MM_S = 2.2
AMBIENT_C = 25.0
HEALTHY_BEARING_RISE_C = 30.0

# Signal name -> (engineering unit, data type) as served by the plant simulator.
SIGNALS: dict[str, tuple[str, str]] = {
    "Vibration": ("mm/s", "Double"),
    "BearingTemperature": ("degC", "Double"),
    "DischargePressure": ("bar", "Double"),
    "Speed": ("rpm", "Double"),
    "Running": ("", "Boolean"),
}


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """A bearing fault that starts at ``start_s`` and reaches full severity ``ramp_s`` later.

    At full severity vibration is up 6 mm/s (with bursts) and the discharge pressure down
    ``pressure_drop_bar``; 0 is an early fault that shows in vibration alone.
    """

    start_s: float = 5.0
    ramp_s: float = 15.0
    pressure_drop_bar: float = 0.4

    def severity(self, t: float) -> float:
        if t < self.start_s:
            return 0.0
        return min(1.0, (t - self.start_s) / self.ramp_s) if self.ramp_s > 0 else 1.0


@dataclass(frozen=True, slots=True)
class PumpReading:
    vibration: float
    bearing_temperature: float
    discharge_pressure: float
    speed: float
    running: bool

    def as_signals(self) -> dict[str, float | bool]:
        return {
            "Vibration": self.vibration,
            "BearingTemperature": self.bearing_temperature,
            "DischargePressure": self.discharge_pressure,
            "Speed": self.speed,
            "Running": self.running,
        }


@dataclass
class PumpState:
    """One pump. ``step(t, dt)`` advances it and returns what its sensors read."""

    index: int
    seed: int = 0
    fault: FaultPlan | None = None
    load: float = 0.85
    _rng: random.Random = field(init=False, repr=False)
    _temperature: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed * 1009 + self.index)
        # Pumps differ slightly, as real ones do.
        self.load = min(1.0, max(0.6, self.load + self._rng.uniform(-0.1, 0.1)))
        self._temperature = AMBIENT_C + HEALTHY_BEARING_RISE_C * self.load

    def severity(self, t: float) -> float:
        return self.fault.severity(t) if self.fault else 0.0

    def step(self, t: float, dt: float) -> PumpReading:
        g = self._rng.gauss
        sev = self.severity(t)
        drop = self.fault.pressure_drop_bar if self.fault else 0.0
        speed = NOMINAL_SPEED_RPM * (0.97 + 0.03 * self.load) + g(0, 4.0)
        ratio = speed / NOMINAL_SPEED_RPM
        pressure = (
            NOMINAL_PRESSURE_BAR * ratio**2 * (0.9 + 0.1 * self.load) - drop * sev + g(0, 0.04)
        )
        # Bearing wear: broadband vibration rises, with bursts as the defect rolls over.
        burst = abs(g(0, 1.2 * sev)) if sev > 0 else 0.0
        vibration = HEALTHY_VIBRATION_MM_S * (0.8 + 0.4 * self.load) + 6.0 * sev + burst
        vibration = max(0.0, vibration + g(0, 0.15))
        # Bearing temperature follows its target with a first-order lag (tau ~ 8 s).
        target = AMBIENT_C + HEALTHY_BEARING_RISE_C * self.load + 22.0 * sev
        self._temperature += (target - self._temperature) * min(1.0, dt / 8.0)
        temperature = self._temperature + g(0, 0.2)
        return PumpReading(
            vibration=round(vibration, 4),
            bearing_temperature=round(temperature, 3),
            discharge_pressure=round(pressure, 4),
            speed=round(speed, 2),
            running=True,
        )


def demo_wave(t: float, period_s: float = 60.0) -> float:
    """A slow sine used by the PLC simulator for values that change over time."""
    return math.sin(2 * math.pi * t / period_s)
