"""What the rest of the machine did while a scenario ran: a busy neighbour, said plainly.

On a 2-core VM one busy neighbour slows vLLM's CPU build several-fold (its OpenMP threads spin and
lose their cores). Two readings from /proc over the scenario's runs tell it: CPU time used by
processes outside llmprobe's own process tree (the engine core and workers are its children), and
the hypervisor's steal time (another guest running on our vCPUs). Linux only; elsewhere None.
"""

from __future__ import annotations

import os
import time
from .records import HostLoadReading

OTHER_CORES_LIMIT = 0.25   # another process busy a quarter of a core on average: figures are suspect
STEAL_LIMIT = 0.05         # over 5% of the machine's CPU time stolen by the hypervisor


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _machine_times() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    hz = _clock_ticks()
    return (user + nice + system + irq + softirq) / hz, steal / hz


def _tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system, all threads) of ``root`` and every live descendant."""
    stats: dict[int, tuple[int, float]] = {}
    hz = _clock_ticks()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                raw = f.read()
        except OSError:   # the process ended while we looked
            continue
        rest = raw[raw.rindex(")") + 2:].split()   # after "pid (comm) ": state ppid ... utime stime
        stats[int(name)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / hz)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo.extend(children.get(pid, ()))
    return total


class HostLoad:
    """Context manager around a scenario's measured runs; ``result()`` after it exits."""

    def __init__(self):
        self._start: tuple[float, float, float, float] | None = None
        self._end: tuple[float, float, float, float] | None = None

    def _snapshot(self) -> tuple[float, float, float, float] | None:
        m = _machine_times()
        if m is None:
            return None
        return time.perf_counter(), m[0], m[1], _tree_cpu_s(os.getpid())

    def __enter__(self) -> HostLoad:
        self._start = self._snapshot()
        return self

    def __exit__(self, *exc) -> None:
        self._end = self._snapshot()

    def result(self) -> HostLoadReading | None:
        if self._start is None or self._end is None:
            return None
        (t0, busy0, steal0, own0), (t1, busy1, steal1, own1) = self._start, self._end
        wall = t1 - t0
        cores = os.cpu_count() or 1
        # Children that exited in between take their CPU time with them: never report less than zero.
        other = max(0.0, (busy1 - busy0) - (own1 - own0))
        steal = steal1 - steal0
        other_cores = other / wall if wall > 0 else 0.0
        steal_share = steal / (wall * cores) if wall > 0 else 0.0
        reasons = []
        if other_cores > OTHER_CORES_LIMIT:
            reasons.append(f"other processes used {other_cores:.2f} of {cores} core(s) during the runs")
        if steal_share > STEAL_LIMIT:
            reasons.append(f"the hypervisor stole {steal_share:.0%} of the CPU time")
        return HostLoadReading(wall_s=wall, cores=cores, own_cpu_s=own1 - own0, other_cpu_s=other,
                               other_cores=other_cores, steal_s=steal, steal_share=steal_share, busy=bool(reasons),
                               reasons=reasons)
