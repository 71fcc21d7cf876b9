"""How busy is the machine, and what do our processes use? Helpers for the benchmarks (not tests).

The benchmarks run on shared hosts where other processes (test suites, browsers)
compete for the same cores, so every measurement records how much CPU the whole
machine used meanwhile, and can wait (bounded) for a quieter moment first. psutil
reads the counters; nothing here parses /proc by hand.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil


def _busy_seconds(times) -> float:
    # iowait is time the CPU was idle waiting for a disk, not work.
    return times.user + times.nice + times.system + getattr(times, "irq", 0) + getattr(times, "softirq", 0)


class BusyMeter:
    """CPU cores in use by the whole machine between its creation and cores_busy()."""

    def __init__(self) -> None:
        self.start = psutil.cpu_times()
        self.wall0 = time.perf_counter()

    def cores_busy(self) -> float:
        end = psutil.cpu_times()
        total = sum(end) - sum(self.start)
        if total <= 0:
            return 0.0
        busy = _busy_seconds(end) - _busy_seconds(self.start)
        return round(busy / total * psutil.cpu_count(), 2)


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


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (gunicorn's workers, qcluster's pool), alive now."""
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass
class TreeStats:
    """CPU and memory of one process tree, sampled while something else runs."""

    name: str
    samples: int = 0
    cpu_seconds: float = 0.0  # user + system of the whole tree, over the sampled time
    rss_mb_peak: float = 0.0  # largest sum of the tree's RSS seen in one sample
    rss_mb_last: float = 0.0
    worker_rss_mb_peak: float = 0.0  # largest RSS of one process of the tree
    processes_peak: int = 0
    cpu_cores_peak: float = 0.0  # busiest sampling interval, in cores
    _cpu: dict[int, float] = field(default_factory=dict, repr=False)

    def as_dict(self, wall_s: float) -> dict:
        return {
            "name": self.name,
            "cpu_seconds": round(self.cpu_seconds, 1),
            "cpu_cores_mean": round(self.cpu_seconds / wall_s, 2) if wall_s > 0 else 0.0,
            "cpu_cores_peak": round(self.cpu_cores_peak, 2),
            "rss_mb_peak": round(self.rss_mb_peak, 1),
            "rss_mb_last": round(self.rss_mb_last, 1),
            "worker_rss_mb_peak": round(self.worker_rss_mb_peak, 1),
            "processes_peak": self.processes_peak,
            "samples": self.samples,
        }


class TreeSampler:
    """Samples the CPU time and RSS of named process trees every `every` seconds, in a thread.

    CPU is the growth of each process's user+system time between samples, so workers that
    are recycled (gunicorn max_requests, django-q2 recycle) count until they exit.
    """

    def __init__(self, roots: dict[str, int], every: float = 2.0) -> None:
        self.roots = roots
        self.every = every
        self.stats = {name: TreeStats(name) for name in roots}
        self.machine = BusyMeter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self.wall0 = time.perf_counter()

    def __enter__(self) -> TreeSampler:
        self._sample()  # CPU baselines
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample()
        self.wall_s = time.perf_counter() - self.wall0
        self.machine_cores = self.machine.cores_busy()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def _sample(self) -> None:
        for name, pid in self.roots.items():
            stats = self.stats[name]
            rss = 0
            grown = 0.0
            processes = tree(pid)
            for process in processes:
                try:
                    with process.oneshot():
                        cpu = process.cpu_times()
                        used = cpu.user + cpu.system
                        memory = process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                grown += max(0.0, used - stats._cpu.get(process.pid, used if stats.samples == 0 else 0.0))
                stats._cpu[process.pid] = used
                rss += memory
                stats.worker_rss_mb_peak = max(stats.worker_rss_mb_peak, memory / 2**20)
            if stats.samples:
                stats.cpu_seconds += grown
                stats.cpu_cores_peak = max(stats.cpu_cores_peak, grown / self.every)
            stats.samples += 1
            stats.rss_mb_last = rss / 2**20
            stats.rss_mb_peak = max(stats.rss_mb_peak, stats.rss_mb_last)
            stats.processes_peak = max(stats.processes_peak, len(processes))

    def report(self) -> dict:
        return {
            "wall_s": round(self.wall_s, 1),
            "machine_cores_busy": self.machine_cores,
            "machine_cores": psutil.cpu_count(),
            "trees": {name: stats.as_dict(self.wall_s) for name, stats in self.stats.items()},
        }


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of one process (this one by default), in MB."""
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
