"""Power sensors for the profiler: Jetson INA3221, Raspberry Pi 5 PMIC, x86 RAPL, or a declared nominal.

``detect()`` returns the first sensor that works on this device; each reports watts for the whole
board (Jetson: the INA3221 input rail; Pi 5: the sum of V*I over the PMIC rails; RAPL: package energy
over time, so CPU package only). When none is readable the profiler records the declared nominal
wattage with ``powerSource: nominal`` so nobody mistakes it for a measurement.
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Protocol

from edgespec.api.profile import PowerSource


class PowerSensor(Protocol):
    source: PowerSource

    def watts(self) -> float:
        """Instantaneous (or since-last-call average) power, watts."""
        ...


class Ina3221Sensor:
    """Jetson boards: INA3221 via hwmon; ``in1_input`` (mV) and ``curr1_input`` (mA) of the first channel."""

    source: PowerSource = "ina3221"

    def __init__(self, hwmon: Path) -> None:
        self.hwmon = hwmon

    @classmethod
    def find(cls) -> Ina3221Sensor | None:
        for name_file in glob.glob("/sys/class/hwmon/hwmon*/name"):
            if Path(name_file).read_text().strip() == "ina3221":
                return cls(Path(name_file).parent)
        return None

    def watts(self) -> float:
        millivolts = float((self.hwmon / "in1_input").read_text())
        milliamps = float((self.hwmon / "curr1_input").read_text())
        return millivolts * milliamps / 1e6


class VcgencmdSensor:
    """Raspberry Pi 5: ``vcgencmd pmic_read_adc`` lists per-rail currents (A) and voltages (V)."""

    source: PowerSource = "vcgencmd"
    _line = re.compile(r"^\s*(\S+?)_([AV])\s+(?:current|volt)\(\d+\)=([0-9.]+)[AV]", re.MULTILINE)

    @classmethod
    def find(cls) -> VcgencmdSensor | None:
        if shutil.which("vcgencmd") is None:
            return None
        sensor = cls()
        try:
            return sensor if sensor.watts() > 0 else None
        except (OSError, subprocess.SubprocessError, ValueError):
            return None

    @classmethod
    def parse(cls, text: str) -> float:
        currents: dict[str, float] = {}
        volts: dict[str, float] = {}
        for rail, kind, value in cls._line.findall(text):
            (currents if kind == "A" else volts)[rail] = float(value)
        return sum(current * volts[rail] for rail, current in currents.items() if rail in volts)

    def watts(self) -> float:
        output = subprocess.run(
            ["vcgencmd", "pmic_read_adc"], capture_output=True, text=True, check=True, timeout=5
        ).stdout
        return self.parse(output)


class RaplSensor:
    """x86: package energy counter (microjoules) of ``intel-rapl:0``; watts since the previous call."""

    source: PowerSource = "rapl"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last = (self._energy_uj(), time.monotonic())

    @classmethod
    def find(cls) -> RaplSensor | None:
        path = Path("/sys/class/powercap/intel-rapl:0/energy_uj")
        try:
            path.read_text()
        except OSError:
            return None
        return cls(path)

    def _energy_uj(self) -> int:
        return int(self.path.read_text())

    def watts(self) -> float:
        energy, now = self._energy_uj(), time.monotonic()
        last_energy, last_time = self._last
        self._last = (energy, now)
        if now <= last_time or energy < last_energy:  # counter wrapped: skip this interval
            return 0.0
        return (energy - last_energy) / 1e6 / (now - last_time)


class NominalSensor:
    """No sensor: the declared wattage, recorded as ``nominal``."""

    source: PowerSource = "nominal"

    def __init__(self, watts: float) -> None:
        self._watts = watts

    def watts(self) -> float:
        return self._watts


def detect(nominal_watts: float) -> PowerSensor:
    for finder in (Ina3221Sensor.find, VcgencmdSensor.find, RaplSensor.find):
        sensor = finder()
        if sensor is not None:
            return sensor
    return NominalSensor(nominal_watts)


class PowerSampler:
    """Samples a sensor on a background thread while a measurement runs; ``mean_watts`` afterwards."""

    def __init__(self, sensor: PowerSensor, interval_s: float = 0.1) -> None:
        self.sensor = sensor
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append(self.sensor.watts())
            except (OSError, ValueError, subprocess.SubprocessError):
                continue

    def __enter__(self) -> PowerSampler:
        self.sensor.watts()  # RAPL: start the interval
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean_watts(self) -> float:
        valid = [w for w in self.samples if w > 0]
        return sum(valid) / len(valid) if valid else self.sensor.watts()
