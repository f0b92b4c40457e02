"""Everything the suite sets up (loop devices, mounts, FUSE daemons) is recorded here
and torn down in reverse order: at the end of each filesystem, on errors, on Ctrl-C
and SIGTERM. The list is also written to a state file so that a run killed with
SIGKILL can be cleaned up by the next run (it only touches what it recorded itself).
"""

import fcntl
import json
import os
import signal
import subprocess
import time

from .util import BenchError, log, log_quiet, run


def _unescape(path):
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 3 < len(path) and path[i + 1:i + 4].isdigit():
            out.append(chr(int(path[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def mounts():
    """[(mountpoint, fstype, source, 'major:minor')] from /proc/self/mountinfo."""
    result = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rfields = right.split()
            result.append((_unescape(fields[4]), rfields[0], _unescape(rfields[1]), fields[2]))
    return result


def mount_entry(path):
    path = os.path.realpath(path)
    found = None
    for entry in mounts():
        if entry[0] == path:
            found = entry  # the last one is the top of the stack
    return found


def is_mounted(path):
    return mount_entry(path) is not None


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as gone
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def loop_backing_file(dev):
    name = os.path.basename(dev)
    try:
        with open("/sys/block/%s/loop/backing_file" % name) as f:
            return f.read().strip()
    except OSError:
        return None


def umount(path, fuse=False):
    """Unmount path; retry while busy; for FUSE abort a stuck connection; lazy as last resort."""
    path = os.path.realpath(path)
    delays = [0, 0.2, 0.5, 1, 2, 3]
    last = ""
    for d in delays:
        if not is_mounted(path):
            return
        time.sleep(d)
        rc, out, err = run(["umount", path], timeout=120, check=False)
        if rc == 0:
            continue
        last = (err or out).strip()
    if not is_mounted(path):
        return
    entry = mount_entry(path)
    if fuse and entry:
        minor = entry[3].split(":")[1]
        abort = "/sys/fs/fuse/connections/%s/abort" % minor
        if os.path.exists(abort):
            log("cleanup: aborting FUSE connection of %s" % path)
            try:
                with open(abort, "w") as f:
                    f.write("1")
            except OSError:
                pass
            run(["umount", path], timeout=60, check=False)
    if is_mounted(path):
        log("cleanup: %s stays busy (%s); lazy unmount" % (path, last))
        run(["umount", "-l", path], timeout=60, check=False)


def detach_loop(dev, backing):
    if loop_backing_file(dev) is None:
        return
    if backing and os.path.realpath(loop_backing_file(dev).replace(" (deleted)", "")) != os.path.realpath(backing):
        return  # not ours any more
    for d in (0, 0.3, 1, 2):
        time.sleep(d)
        rc, _, err = run(["losetup", "-d", dev], timeout=60, check=False)
        if rc == 0 or loop_backing_file(dev) is None:
            return
    log("cleanup: could not detach %s: %s" % (dev, err.strip()))


def stop_daemon(pid, proc=None, grace=60):
    """Wait for a FUSE daemon to exit after its unmount; TERM, then KILL if it does not."""
    def gone():
        if proc is not None:
            return proc.poll() is not None
        return not pid_alive(pid)

    end = time.monotonic() + grace
    while time.monotonic() < end:
        if gone():
            return
        time.sleep(0.05)
    log("cleanup: daemon %d did not exit %d s after unmount; SIGTERM" % (pid, grace))
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if gone():
            return
        time.sleep(0.05)
    log("cleanup: daemon %d ignores SIGTERM; SIGKILL" % pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


class Resources:
    """A stack of things to undo. mark()/unwind(mark) scope them to one filesystem."""

    def __init__(self, state_path):
        self.state_path = state_path
        self.items = []  # dicts: kind in loop|mount|daemon
        self._procs = {}

    def _save(self):
        data = {"pid": os.getpid(), "items": [
            {k: v for k, v in it.items() if k != "proc"} for it in self.items]}
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.state_path)

    def add_loop(self, dev, backing):
        self.items.append({"kind": "loop", "dev": dev, "backing": backing})
        self._save()

    def add_mount(self, path, fuse=False):
        self.items.append({"kind": "mount", "path": os.path.realpath(path), "fuse": fuse})
        self._save()

    def add_daemon(self, proc, name):
        self.items.append({"kind": "daemon", "pid": proc.pid, "name": name, "proc": proc})
        self._save()

    def mark(self):
        return len(self.items)

    def unwind(self, mark=0):
        """Undo everything added after mark, newest first. Never raises."""
        while len(self.items) > mark:
            it = self.items[-1]
            try:
                self._undo(it)
            except Exception as e:  # keep going: the rest must still be cleaned
                log("cleanup: %s %s: %s" % (it["kind"], it.get("path") or it.get("dev") or it.get("pid"), e))
            self.items.pop()
            self._save()
        if not self.items and os.path.exists(self.state_path):
            os.unlink(self.state_path)

    @staticmethod
    def _undo(it):
        log_quiet("cleanup %s" % {k: v for k, v in it.items() if k != "proc"})
        if it["kind"] == "mount":
            umount(it["path"], fuse=it.get("fuse", False))
        elif it["kind"] == "daemon":
            stop_daemon(it["pid"], it.get("proc"))
        elif it["kind"] == "loop":
            detach_loop(it["dev"], it["backing"])


def recover_stale(state_path):
    """Clean up after a previous run that died without cleaning (e.g. SIGKILL)."""
    try:
        with open(state_path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return
    if pid_alive(data.get("pid", -1)) and data.get("pid") != os.getpid():
        raise BenchError("another benchmark run (pid %d) owns %s" % (data["pid"], state_path))
    items = data.get("items", [])
    if items:
        log("cleaning up %d leftover item(s) from an earlier run that died" % len(items))
    for it in reversed(items):
        try:
            if it["kind"] == "daemon":
                # unmounting (done first, it was pushed later) makes it exit; if it is
                # still around, and really is that daemon (pids get reused), stop it
                cmdline = ""
                try:
                    with open("/proc/%d/cmdline" % it["pid"], "rb") as f:
                        cmdline = f.read().decode(errors="replace")
                except OSError:
                    pass
                if pid_alive(it["pid"]) and it.get("name") and it["name"] in cmdline:
                    stop_daemon(it["pid"], grace=5)
            else:
                Resources._undo(it)
        except Exception as e:
            log("cleanup: %s" % e)
    os.unlink(state_path)


def claim_workdir(workdir, what):
    """Locks `workdir` for one run (a second run is refused), cleans up what
    a killed earlier run left there, and returns (lock file, Resources)."""
    lock = open(os.path.join(workdir, ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise BenchError("another %s run is using %s" % (what, workdir))
    recover_stale(os.path.join(workdir, "state.json"))
    return lock, Resources(os.path.join(workdir, "state.json"))
