"""What dhfs's FUSE requests cost in a job, measured on the machine the suite runs on.

Two measurements, both with nothing but what any dhfs mount offers:

- the requests dhfs answered during the timed part of a job, by kind, and the daemon's own
  time for them (`dhfsctl --json requests`, before and after);
- the price of one request that the daemon answers at once: a getxattr of a missing
  attribute (the kernel caches no xattrs for FUSE, so each call is a round trip to the
  daemon), timed in a loop on a file in the mount, minus the same loop on a file outside
  it (the system call and this loop's own cost).

Their product is the time the job's requests spend in kernel round trips. For requests the
application waits for one after the other (an untar: lookup, create, setattr ... per file),
it is a floor under the job's time that no daemon can go below on this machine and kernel,
however little time it spends itself. Requests the kernel sends in the background
(write-back and read-ahead I/O, release, forget) overlap with others and are left out of
the floor, which makes it a lower bound.
"""

import json
import os
import time

from .util import median, run

# Kinds the kernel sends without the application waiting for each: write-back WRITEs and
# read-ahead READs run many at a time, RELEASE and FORGET are fire-and-forget.
BACKGROUND_KINDS = {"READ", "WRITE", "RELEASE", "RELEASEDIR", "FORGET", "BATCH_FORGET", "INTERRUPT"}

PROBE_NAME = "user.dhfs-bench-probe"


class RequestCounter:
    """`dhfsctl --json requests` of one mount, as differences between two points."""

    def __init__(self, dhfsctl, mnt):
        self.dhfsctl, self.mnt = dhfsctl, mnt
        # dhfsctl's own requests (open, ioctl, release of the mount's root) fall between a
        # reading and the next; measured once, subtracted from every difference
        self.own = {}
        a = self.snapshot()
        b = self.snapshot()
        self.own = _difference(a, b)["kinds"] if a and b else {}

    def snapshot(self):
        rc, out, _ = run([self.dhfsctl, "--json", "requests", self.mnt], timeout=60, check=False)
        if rc != 0:
            return None
        try:
            d = json.loads(out)
            return {"count": d["count"], "total_ns": d["total_ns"],
                    "kinds": {k["request"]: (k["count"], k["total_ns"]) for k in d["requests"]}}
        except (ValueError, KeyError, TypeError):
            return None

    def difference(self, before, after):
        """{count, daemon_s, kinds: {name: count}, kind_s: {name: daemon seconds}} between two
        snapshots, or None when the counters went back (the daemon was restarted in between)."""
        if not before or not after or after["count"] < before["count"]:
            return None
        d = _difference(before, after)
        for name, n in self.own.items():
            if name in d["kinds"]:
                d["kinds"][name] = max(0, d["kinds"][name] - n)
                if d["kinds"][name] == 0:
                    del d["kinds"][name]
        d["count"] = sum(d["kinds"].values())
        return d


def _difference(a, b):
    kinds, kind_s, total_ns = {}, {}, 0
    for name, (count, ns) in b["kinds"].items():
        c0, ns0 = a["kinds"].get(name, (0, 0))
        if count > c0:
            kinds[name] = count - c0
            kind_s[name] = max(0, ns - ns0) / 1e9
        total_ns += max(0, ns - ns0)
    return {"count": sum(kinds.values()), "daemon_s": total_ns / 1e9, "kinds": kinds, "kind_s": kind_s}


def _getxattr_loop_us(path, calls):
    t = time.perf_counter()
    for _ in range(calls):
        try:
            os.getxattr(path, PROBE_NAME)
        except OSError:
            pass
    return (time.perf_counter() - t) / calls * 1e6


def round_trip_us(mnt, outside_dir, calls=20000, rounds=3):
    """Median over `rounds` of the µs one getxattr costs on a file in the mount more than on a
    file in outside_dir: one FUSE round trip whose daemon part is a table lookup."""
    inside = os.path.join(mnt, ".dhfs-bench-probe")
    outside = os.path.join(outside_dir, ".dhfs-bench-probe")
    for p in (inside, outside):
        with open(p, "w"):
            pass
    try:
        samples = []
        for _ in range(rounds):
            samples.append(_getxattr_loop_us(inside, calls) - _getxattr_loop_us(outside, calls))
        return max(0.0, median(samples))
    finally:
        for p in (inside, outside):
            try:
                os.unlink(p)
            except OSError:
                pass


def waited_requests(kinds):
    """The requests of a difference that the application waited for (see BACKGROUND_KINDS)."""
    return sum(n for name, n in kinds.items() if name not in BACKGROUND_KINDS)
