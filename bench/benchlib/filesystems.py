"""The filesystems under test and the block device they sit on.

Each filesystem knows how to format a device, mount it on a directory and report its
version. Everything it sets up goes on the Resources stack, so unmount is just
unwinding that stack (FUSE: umount, then wait for the daemon to exit; then the loop
device is detached).
"""

import hashlib
import os
import resource
import subprocess
import time

from .resources import is_mounted, mount_entry
from .util import BenchError, log_quiet, read_file, run, which


# --------------------------------------------------------------------------- devices

class ImageBacking:
    """One image file shared by every filesystem in turn, each on a fresh loop device.

    Sharing the file puts every filesystem on exactly the same blocks of the same disk.
    The file is filled with (non-zero) data once: on the VM this suite was written on,
    writes into a fresh image file were about 3x slower than the same writes repeated
    later, which would otherwise penalise whichever filesystem touches a block first.
    """

    def __init__(self, path, size, direct_io=True):
        self.path, self.size, self.direct_io = path, size, direct_io
        self.actual_dio = None

    def describe(self):
        return "image file %s (%d GiB), loop device with direct I/O %s" % (
            self.path, self.size >> 30, {True: "on", False: "off", None: "?"}[self.actual_dio])

    def prepared(self):
        return (os.path.exists(self.path) and os.path.getsize(self.path) == self.size
                and read_file(self.path + ".filled").strip() == str(self.size))

    def prepare(self, timeout):
        if self.prepared():
            return False
        if os.path.exists(self.path + ".filled"):
            os.unlink(self.path + ".filled")
        with open(self.path, "ab"):
            pass
        os.truncate(self.path, self.size)
        # pseudo-random data, direct I/O, 4 MiB blocks: one pass over the whole file
        run(["fio", "--name=fill", "--filename=" + self.path, "--rw=write", "--bs=4M",
             "--size=%d" % self.size, "--direct=1", "--ioengine=psync", "--end_fsync=1",
             "--refill_buffers=1", "--fallocate=none", "--output=/dev/null"], timeout=timeout)
        with open(self.path + ".filled", "w") as f:
            f.write(str(self.size))
        return True

    def attach(self, res):
        cmd = ["losetup", "-f", "--show"] + (["--direct-io=on"] if self.direct_io else []) + [self.path]
        _, out, _ = run(cmd, timeout=60)
        dev = out.strip()
        res.add_loop(dev, self.path)
        name = os.path.basename(dev)
        self.actual_dio = read_file("/sys/block/%s/loop/dio" % name).strip() == "1"
        # no discard: a discard on a loop device punches holes into the image file and
        # would undo the fill above (mkfs of every filesystem discards by default)
        try:
            with open("/sys/block/%s/queue/discard_max_bytes" % name, "w") as f:
                f.write("0")
        except OSError:
            pass
        return dev


class DeviceBacking:
    """A real block device given by the operator: formatted by each filesystem in turn."""

    def __init__(self, dev):
        self.dev = dev
        self.path = dev

    def describe(self):
        return "block device %s" % self.dev

    def prepared(self):
        return True

    def prepare(self, timeout):
        return False

    def attach(self, res):
        return self.dev


# ----------------------------------------------------------------------- filesystems

def _raise_nofile():
    # FUSE passthrough daemons keep a file descriptor per open/looked-up inode
    try:
        nr_open = int(read_file("/proc/sys/fs/nr_open", "1048576"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (nr_open, nr_open))
    except (ValueError, OSError):
        pass


def _first_line(cmd, containing=""):
    try:
        rc, out, err = run(cmd, timeout=10, check=False)
    except BenchError:
        return "?"
    for line in (out + "\n" + err).splitlines():
        if line.strip() and "unknown argument" not in line and containing in line:
            return line.strip()
    return "?"


class FileSystem:
    name = ""          # --only id and column key
    title = ""         # column header
    fuse = False       # served by a user-space daemon
    overlay_copyup = True  # kernel overlayfs over it (copy-up job)

    def __init__(self, settings):
        self.settings = settings
        self.proc = None
        self.mnt = None
        self._mark = None

    def available(self):
        """None when it can run, or the reason it cannot."""
        for tool in self.tools():
            if not which(tool):
                return "%s not installed" % tool
        return None

    def tools(self):
        return []

    def version(self):
        return "?"

    def format(self, dev, inodes=None):
        """inodes: how many files the filesystem must be able to hold (ext4 sizes its
        inode table at mkfs time; the others allocate inodes dynamically)."""
        raise NotImplementedError

    def mount(self, dev, mnt, res, log_path):
        """Mount and return the seconds from starting the mount until the root is listable."""
        raise NotImplementedError

    def unmount(self, res):
        if self._mark is not None:
            res.unwind(self._mark)
            self._mark = None
            self.proc = None

    def daemon_pid(self):
        return self.proc.pid if self.proc else None

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError("%s daemon exited (status %s); see its log" % (self.name, self.proc.returncode))
        if self.mnt and not is_mounted(self.mnt):
            raise BenchError("%s is no longer mounted on %s" % (self.name, self.mnt))

    # helpers
    def _kernel_mount(self, fstype, dev, mnt, res, opts=None):
        t = time.perf_counter()
        run(["mount", "-t", fstype] + (["-o", opts] if opts else []) + [dev, mnt], timeout=300)
        res.add_mount(mnt)
        run(["ls", "-f", mnt], timeout=60)
        return time.perf_counter() - t

    def _start_daemon(self, cmd, mnt, res, log_path, name, timeout=120):
        """Start a FUSE daemon in the foreground (-f) as our child, in its own session
        (so Ctrl-C reaches us, not it), and wait until mnt is a FUSE mount."""
        log_quiet("$ " + " ".join(cmd))
        logf = open(log_path, "ab")
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_raise_nofile)
        logf.close()
        res.add_daemon(proc, name)
        mnt = os.path.realpath(mnt)
        end = time.monotonic() + timeout
        while True:
            e = mount_entry(mnt)
            if e is not None and e[1].startswith("fuse"):
                break
            if proc.poll() is not None:
                tail = read_file(log_path).strip().splitlines()[-1:] or ["no output"]
                raise BenchError("%s exited with status %d before mounting: %s" % (
                    name, proc.returncode, tail[0]))
            if time.monotonic() > end:
                proc.terminate()
                raise BenchError("%s did not mount %s within %d s" % (name, mnt, timeout))
            time.sleep(0.002)
        res.add_mount(mnt, fuse=True)
        run(["ls", "-f", mnt], timeout=60)
        elapsed = time.perf_counter() - t
        self.proc = proc
        return elapsed


class Ext4(FileSystem):
    name, title = "ext4", "ext4"

    def tools(self):
        return ["mkfs.ext4"]

    def version(self):
        return _first_line(["mke2fs", "-V"])

    def format(self, dev, inodes=None):
        # no lazy init: otherwise ext4lazyinit zeroes inode tables in the background
        # while the benchmark runs
        extra = ["-N", str(inodes)] if inodes else []
        run(["mkfs.ext4", "-F", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0"] + extra + [dev],
            timeout=600)

    def mount(self, dev, mnt, res, log_path):
        self._mark, self.mnt = res.mark(), mnt
        return self._kernel_mount("ext4", dev, mnt, res)


class Xfs(FileSystem):
    name, title = "xfs", "XFS"

    def tools(self):
        return ["mkfs.xfs"]

    def version(self):
        return _first_line(["mkfs.xfs", "-V"])

    def format(self, dev, inodes=None):
        run(["mkfs.xfs", "-f", "-q", "-m", "reflink=1", dev], timeout=600)

    def mount(self, dev, mnt, res, log_path):
        self._mark, self.mnt = res.mark(), mnt
        return self._kernel_mount("xfs", dev, mnt, res)


class Btrfs(FileSystem):
    name, title = "btrfs", "btrfs"

    def tools(self):
        return ["mkfs.btrfs"]

    def version(self):
        return _first_line(["mkfs.btrfs", "--version"])

    def format(self, dev, inodes=None):
        run(["mkfs.btrfs", "-f", "-q", dev], timeout=600)

    def mount(self, dev, mnt, res, log_path):
        self._mark, self.mnt = res.mark(), mnt
        return self._kernel_mount("btrfs", dev, mnt, res)


class FuseOverlayfs(FileSystem):
    """fuse-overlayfs (what rootless container hosts use today) with its lower, upper and
    work directories on ext4 on the device; everything is written to the upper layer."""
    name, title = "fuse-overlayfs", "fuse-overlayfs"
    fuse = True
    overlay_copyup = False

    def tools(self):
        return ["mkfs.ext4", "fuse-overlayfs"]

    def version(self):
        return _first_line(["fuse-overlayfs", "--version"], "fuse-overlayfs") + " on ext4"

    def format(self, dev, inodes=None):
        Ext4.format(self, dev, inodes)

    def mount(self, dev, mnt, res, log_path):
        self._mark, self.mnt = res.mark(), mnt
        base = self.settings["fuse_base_mnt"]
        t = time.perf_counter()
        self._kernel_mount("ext4", dev, base, res)
        for d in ("lower", "upper", "work"):
            os.makedirs(os.path.join(base, d), exist_ok=True)
        opts = "lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work,allow_other".format(base)
        self._start_daemon(["fuse-overlayfs", "-f", "-o", opts, mnt], mnt, res, log_path,
                           "fuse-overlayfs")
        return time.perf_counter() - t


class Dhfs(FileSystem):
    name, title = "dhfs", "dhfs"
    fuse = True

    def bins(self):
        d = self.settings.get("dhfs_bin_snapshot") or self.settings["dhfs_bin"]
        return os.path.join(d, "mkfs.dhfs"), os.path.join(d, "dhfs")

    def ctl(self):
        """dhfsctl (None if not built: the request counts of the report are then left out)."""
        d = self.settings.get("dhfs_bin_snapshot") or self.settings["dhfs_bin"]
        path = os.path.join(d, "dhfsctl")
        return path if os.access(path, os.X_OK) else None

    def snapshot(self, dest):
        """Run copies of the binaries: a rebuild during the run cannot mix two versions."""
        os.makedirs(dest, exist_ok=True)
        ctl = self.ctl()
        for b in self.bins() + ((ctl,) if ctl else ()):
            target = os.path.join(dest, os.path.basename(b))
            tmp = target + ".tmp"
            with open(b, "rb") as src, open(tmp, "wb") as dst:
                dst.write(src.read())
            os.chmod(tmp, 0o755)
            os.utime(tmp, (os.path.getatime(b), os.path.getmtime(b)))
            os.replace(tmp, target)
        self.settings["dhfs_bin_snapshot"] = dest

    def available(self):
        missing = [os.path.basename(b) for b in self.bins() if not os.access(b, os.X_OK)]
        if missing:
            return "not built (no %s in %s)" % (" or ".join(missing), self.settings["dhfs_bin"])
        return None

    def version(self):
        parts = []
        for b in self.bins():
            try:
                with open(b, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()[:12]
                parts.append("%s (sha256 %s, built %s)" % (
                    os.path.join(self.settings["dhfs_bin"], os.path.basename(b)), h, time.strftime(
                    "%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(b)))))
            except OSError:
                parts.append("%s (missing)" % b)
        return "; ".join(parts)

    def format(self, dev, inodes=None):
        mkfs, _ = self.bins()
        run([mkfs] + self.settings["dhfs_mkfs_opts"] + ["-f", dev], timeout=600)

    def mount(self, dev, mnt, res, log_path):
        self._mark, self.mnt = res.mark(), mnt
        _, daemon = self.bins()
        opts = ",".join(["allow_other"] + self.settings["dhfs_mount_opts"])
        return self._start_daemon([daemon, dev, mnt, "-f", "-o", opts], mnt, res, log_path, "dhfs")


ALL = [Ext4, Xfs, Btrfs, FuseOverlayfs, Dhfs]
NAMES = [c.name for c in ALL] + ["raw"]
ALIASES = {"fuse": "fuse-overlayfs", "fuseoverlayfs": "fuse-overlayfs", "fuse_overlayfs": "fuse-overlayfs",
           "device": "raw", "ext": "ext4"}
TITLES = {c.name: c.title for c in ALL}
TITLES["raw"] = "raw device (O_DIRECT)"
