"""How busy is the machine? Shared helpers for the benchmark scripts (not a test module).

The benchmarks run on shared hosts where other processes (test suites, browsers)
compete for the same cores, so every measurement records how much CPU everything
else used meanwhile, and can wait (bounded) for a quieter moment first.
"""

from __future__ import annotations

import os
import time


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


class BusyMeter:
    """CPU cores in use by the whole machine between start() and stop()."""

    def __init__(self) -> None:
        self.busy0, self.total0 = _cpu_jiffies()
        self.wall0 = time.perf_counter()

    def cores_busy(self) -> float:
        busy1, total1 = _cpu_jiffies()
        total = total1 - self.total0
        if total <= 0:
            return 0.0
        return round((busy1 - self.busy0) / total * (os.cpu_count() or 1), 2)


def busy_cores(sample_s: float = 1.0) -> float:
    meter = BusyMeter()
    time.sleep(sample_s)
    return meter.cores_busy()


def wait_quiet(max_wait_s: float, threshold_cores: float = 0.3) -> float:
    """Wait up to max_wait_s for the machine to use < threshold_cores; the last sample."""
    deadline = time.monotonic() + max_wait_s
    busy = busy_cores()
    while busy >= threshold_cores and time.monotonic() < deadline:
        busy = busy_cores()
    return busy
