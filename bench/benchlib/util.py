"""Small helpers shared by the suite: running commands, logging, units, statfs."""

import os
import re
import shlex
import subprocess
import sys
import time

_log_file = None
_t0 = time.monotonic()


class BenchError(Exception):
    """A failure with a one-line, human readable reason."""


class Interrupted(BaseException):
    """Raised from signal handlers (SIGTERM, SIGHUP) like KeyboardInterrupt."""


def set_log_file(path):
    global _log_file
    _log_file = open(path, "a", buffering=1)


def log(msg):
    """Progress line on stderr (and in run.log of the results folder)."""
    elapsed = time.monotonic() - _t0
    line = "[%3d:%02d] %s" % (elapsed // 60, elapsed % 60, msg)
    print(line, file=sys.stderr, flush=True)
    if _log_file:
        _log_file.write(line + "\n")


def log_quiet(msg):
    """Only into run.log (commands, details)."""
    if _log_file:
        _log_file.write("         %s\n" % msg)


def elapsed_total():
    return time.monotonic() - _t0


def last_line(text):
    lines = [l.strip() for l in (text or "").strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


def run(cmd, timeout=600, check=True, input=None, env=None, cwd=None):
    """Run a command (list), capture output, raise BenchError with one line on failure."""
    log_quiet("$ " + " ".join(shlex.quote(c) for c in cmd))
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           input=input, timeout=timeout, env=env, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise BenchError("%s: timed out after %d s" % (os.path.basename(cmd[0]), timeout))
    except FileNotFoundError:
        raise BenchError("%s: command not found" % cmd[0])
    out = p.stdout.decode(errors="replace")
    err = p.stderr.decode(errors="replace")
    if check and p.returncode != 0:
        reason = last_line(err) or last_line(out) or "exit status %d" % p.returncode
        raise BenchError("%s failed (exit %d): %s" % (os.path.basename(cmd[0]), p.returncode, reason))
    return p.returncode, out, err


def run_timed(cmd, timeout=600, shell=False):
    """Run a command and return its wall-clock time in seconds (raises on failure)."""
    if shell:
        cmd = ["bash", "-o", "pipefail", "-c", cmd]
    t = time.perf_counter()
    _, out, _ = run(cmd, timeout=timeout)
    return time.perf_counter() - t, out


def drop_caches(timeout=600):
    """sync; echo 3 > /proc/sys/vm/drop_caches (in a child so a hung mount cannot hang us)."""
    run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], timeout=timeout)


def sync(timeout=600):
    run(["sync"], timeout=timeout)


def statfs_used(path, timeout=60):
    """Used bytes of the filesystem holding path, from statfs (f_blocks - f_bfree) * f_frsize."""
    _, out, _ = run(["stat", "-f", "--format=%S %b %f", path], timeout=timeout)
    frsize, blocks, bfree = (int(x) for x in out.split())
    return (blocks - bfree) * frsize


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.I)


def parse_size(text):
    """'8G', '512M', '4GiB', '1048576' -> bytes (binary multiples)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError("not a size: %r" % text)
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def fmt_size(n):
    for unit, mult in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= mult:
            v = n / mult
            return ("%d %s" % (v, unit)) if v == int(v) else ("%.1f %s" % (v, unit))
    return "%d B" % n


def fmt_count(n):
    if n >= 1000000 and n % 1000000 == 0:
        return "%dM" % (n // 1000000)
    if n >= 1000 and n % 1000 == 0:
        return "%dk" % (n // 1000)
    return str(n)


def fmt_value(v, unit):
    """Format a median for the tables."""
    if v is None:
        return "—"
    if unit == "IOPS":
        if v >= 10000:
            return "%.0fk" % (v / 1000)
        if v >= 1000:
            return "%.1fk" % (v / 1000)
        return "%.0f" % v
    if unit == "MB/s":
        return "%.0f" % v if v >= 10 else "%.1f" % v
    if unit == "s":
        if v >= 100:
            return "%.0f" % v
        if v >= 10:
            return "%.1f" % v
        if v >= 1:
            return "%.2f" % v
        if v >= 0.001:
            return "%.3f" % v
        return "%.4f" % v
    if unit == "MiB":
        return "%.1f" % v if v < 100 else "%.0f" % v
    if unit in ("B/inode", "B"):
        return "%.0f" % v
    return "%.3g" % v


def median(values):
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    n = len(vals)
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2.0


def which(name, extra_dirs=()):
    for d in list(extra_dirs) + os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/sbin"]:
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def read_file(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default
