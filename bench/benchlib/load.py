"""How much CPU other work on the machine used while a job ran (a build, a test suite...).

foreign = CPU busy time of the whole machine (/proc/stat)
          - CPU time of this run's own processes (the suite, fio, tar, FUSE daemons)
          - CPU time of kernel threads (they mostly serve our own I/O: loop, writeback)
Short-lived foreign processes are included (they show in /proc/stat); the figure is an
estimate, good enough to flag a run whose numbers were disturbed.
"""

import os
import resource
import time

_TICK = float(os.sysconf("SC_CLK_TCK"))
_PF_KTHREAD = 0x00200000


def _busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / _TICK


def _procs():
    """{pid: (ppid, cpu seconds, comm, kernel thread)}"""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                data = f.read()
        except OSError:
            continue
        comm = data[data.index("(") + 1:data.rindex(")")]
        rest = data[data.rindex(")") + 2:].split()
        # rest[0]=state, [1]=ppid, [6]=flags, [11]=utime, [12]=stime
        out[int(name)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / _TICK, comm,
                          bool(int(rest[6]) & _PF_KTHREAD))
    return out


def _ours(procs, me):
    children = {}
    for pid, (ppid, _, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    ours, todo = set(), [me]
    while todo:
        p = todo.pop()
        if p in ours:
            continue
        ours.add(p)
        todo.extend(children.get(p, []))
    return ours


def _rusage():
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


class Sample:
    def __init__(self):
        self.t = time.monotonic()
        self.busy = _busy()
        self.rusage = _rusage()
        self.procs = _procs()
        self.ours = _ours(self.procs, os.getpid())


def measure(start):
    """(foreign cores on average since start, [busiest foreign process names])."""
    end = Sample()
    wall = end.t - start.t
    if wall <= 0:
        return 0.0, []
    ours_live = kthreads = 0.0
    foreign = {}
    for pid, (ppid, cpu, comm, kt) in end.procs.items():
        before = start.procs.get(pid)
        delta = max(0.0, cpu - (before[1] if before else 0.0))
        if kt or pid == 2:
            kthreads += delta
        elif pid in end.ours or pid in start.ours:
            ours_live += delta  # children that came and went are in RUSAGE_CHILDREN
        else:
            foreign[comm] = foreign.get(comm, 0.0) + delta
    ours = (end.rusage - start.rusage) + ours_live
    other = max(0.0, (end.busy - start.busy) - ours - kthreads)
    top = [c for c, v in sorted(foreign.items(), key=lambda kv: -kv[1]) if v > 0.05 * wall][:3]
    return other / wall, top


def note_start_load(machine, warn):
    """Measures what other processes use for 2 s before a run, records it in
    `machine` and calls warn(message) when it will disturb the figures."""
    sample = Sample()
    time.sleep(2)
    foreign, busiest = measure(sample)
    machine["other load at start"] = "%.2f of %d cores (%s)" % (foreign, os.cpu_count(), ", ".join(busiest) or "idle")
    if foreign >= 0.25:
        warn("WARNING: the machine is busy: other processes use %.1f of %d cores (%s); figures will be disturbed" % (
            foreign, os.cpu_count(), ", ".join(busiest)))
