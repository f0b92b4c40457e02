#!/usr/bin/python3
"""The docker workflow on a dhfs data-root and on an ext4 data-root, side by side.

For each filesystem in turn, on a loop device over the same image file (same size, same
blocks of the same disk): format, mount, start Debian's dockerd (docker.io) with its
data-root there and the overlay2 driver, start a fresh local registry (Debian's
docker-registry on 127.0.0.1), then time each step of the workflow and record the space
used on the filesystem after it:

  import    docker import of a busybox rootfs with a payload tree (many small files)
  build     docker build FROM it: COPY big files, RUN that modifies (copy-up) and
            deletes base files
  push      docker push of the built image to the registry
  pull      docker rmi of the built image, docker pull of it back
  run       N containers at once, each writing its own data (fsync), reading it back,
            reading the image's payload and modifying some image files
  remove    docker rm of the containers, rmi of the images, system prune -af

Prints a markdown table (ext4, dhfs, dhfs/ext4) and writes report.md, results.json and
logs to a results folder. Python 3 standard library only; run as root. Everything it
started (dockerd, its containerd and shims, registries, mounts, loop devices, temp dirs)
is stopped and removed on exit, also on failure or SIGINT/SIGTERM.

    sudo bench/docker_bench.py --dhfs-bin build/release/tools
"""

import argparse
import datetime
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)
sys.dont_write_bytecode = True

from benchlib import fuse_cost, report  # noqa: E402  (FUSE request costs; machine description, shared with run.py)
from benchlib.util import BenchError, Interrupted, log, log_quiet, parse_size, run, set_log_file  # noqa: E402

DOCKER, DOCKERD, REGISTRY, BUSYBOX = "/usr/bin/docker", "/usr/sbin/dockerd", "/usr/bin/docker-registry", "/bin/busybox"
FILESYSTEMS = ["ext4", "dhfs"]
STEPS = [
    ("import", "docker import of the base rootfs"),
    ("build", "docker build (COPY + RUN modify/delete)"),
    ("push", "docker push to the local registry"),
    ("pull", "docker rmi + docker pull back"),
    ("run", "N containers: write + fsync, read back, read image, copy-up"),
    ("remove", "docker rm + rmi + system prune -af"),
]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/docker_bench.py", description=__doc__.split("\n")[0])
    p.add_argument("--dhfs-bin", default=os.path.join(REPO, "build", "release", "tools"),
                   help="directory of mkfs.dhfs, dhfs and dhfsctl (default build/release/tools)")
    p.add_argument("--dhfs-mount-opts", default="", help="extra dhfs -o options (comma-separated)")
    p.add_argument("--size", default="4G", help="size of the image file (default 4G)")
    p.add_argument("--workdir", default="/var/tmp/dhfs-docker-bench",
                   help="image file, registries, contexts, mount points (default /var/tmp/dhfs-docker-bench)")
    p.add_argument("--out", help="results folder (default bench/results/<date>-docker)")
    p.add_argument("--only", help="comma-separated: ext4,dhfs (default both)")
    p.add_argument("--containers", type=int, default=8, help="containers run at once (default 8)")
    p.add_argument("--write-mib", type=int, default=16, help="MiB each container writes (default 16)")
    p.add_argument("--base-files", type=int, default=1500, help="payload files in the base rootfs (default 1500)")
    p.add_argument("--base-mib", type=int, default=48, help="MiB of payload in the base rootfs (default 48)")
    p.add_argument("--copy-mib", type=int, default=64, help="MiB the build COPYs in (default 64)")
    p.add_argument("--repeat", type=int, default=1, help="repetitions, medians reported (default 1)")
    p.add_argument("--loop-dio", choices=["on", "off"], default="on",
                   help="loop device with direct I/O to the image file (default on)")
    return p.parse_args(argv)


# ------------------------------------------------------------------ resources

class Resources:
    """What this run started, undone in reverse order on exit."""

    def __init__(self):
        self.undo = []   # (description, callable)

    def add(self, what, fn):
        self.undo.append((what, fn))
        return len(self.undo) - 1

    def release(self, index):
        """Undo one resource now (normal teardown)."""
        what, fn = self.undo[index]
        self.undo[index] = (what, None)
        if fn:
            fn()

    def release_all(self):
        while self.undo:
            what, fn = self.undo.pop()
            if fn is None:
                continue
            try:
                fn()
            except BaseException as e:  # keep cleaning
                print("docker_bench: cleanup of %s: %s" % (what, e), file=sys.stderr)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_pid(pid, grace):
    if not pid or not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def pids_naming(text):
    """Processes whose command line contains `text` (this run's own exec-root)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if text.encode() in f.read():
                    out.append(int(d))
        except OSError:
            pass
    return out


def reap(proc, grace):
    """Stop a Popen child (SIGTERM, SIGKILL after `grace` s) and collect it.
    (Not through stop_pid: a child that exited stays a zombie, alive to
    kill(0), until it is waited for.)"""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def wait_then_stop(proc, grace):
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        reap(proc, 10)


def unmount(path):
    rc, _, _ = run(["umount", path], timeout=120, check=False)
    if rc != 0:
        run(["umount", "-l", path], timeout=60, check=False)


def mounts_under(prefix):
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            mp = line.split()[1].replace("\\040", " ")
            if mp == prefix or mp.startswith(prefix + "/"):
                out.append(mp)
    return sorted(out, reverse=True)


# ------------------------------------------------------------------ inputs

def make_inputs(work, a):
    """Base rootfs tarball (busybox + payload tree) and the build context, from a fixed seed."""
    rng = random.Random(20261126)
    rootfs = os.path.join(work, "rootfs")
    shutil.rmtree(rootfs, ignore_errors=True)
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "payload"):
        os.makedirs(os.path.join(rootfs, d))
    shutil.copy(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
    _, out, _ = run([BUSYBOX, "--list"])
    for applet in out.split():
        if applet != "busybox":
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    # Payload: sizes spread log-uniformly from 1 KiB to 256 KiB, scaled to base_mib.
    sizes = [int(2 ** rng.uniform(10, 18)) for _ in range(a.base_files)]
    scale = (a.base_mib << 20) / sum(sizes)
    for i, s in enumerate(sizes):
        sub = os.path.join(rootfs, "payload", "d%02d" % (i % 32))
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, "f%05d" % i), "wb") as f:
            f.write(rng.randbytes(max(1, int(s * scale))))
    tarball = os.path.join(work, "base.tar")
    run(["tar", "-C", rootfs, "-cf", tarball, "."], timeout=300)
    shutil.rmtree(rootfs)

    ctx = os.path.join(work, "ctx")
    shutil.rmtree(ctx, ignore_errors=True)
    os.makedirs(ctx)
    nbig = 8
    for i in range(nbig):
        with open(os.path.join(ctx, "big%d.bin" % i), "wb") as f:
            f.write(rng.randbytes((a.copy_mib << 20) // nbig))
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write("FROM bench/base:1\n"
                "COPY big*.bin /app/\n"
                # copy-up: append to every file of 4 payload dirs; delete 4 other dirs' files
                "RUN for f in /payload/d0[0-3]/*; do echo modified >> $f; done"
                " && rm -rf /payload/d1[0-3] && mkdir /app/run && echo built > /app/run/stamp\n")
    return tarball, ctx


# ------------------------------------------------------------------ one filesystem

class DockerHost:
    """A loop device with ext4 or dhfs, mounted, with a private dockerd and registry."""

    def __init__(self, fs, a, res, work, logs):
        self.fs, self.a, self.res, self.work, self.logs = fs, a, res, work, logs
        self.mnt = os.path.join(work, "mnt-" + fs)
        self.image = os.path.join(work, "disk.img")
        # short: containerd's unix sockets live under exec-root (108-byte limit)
        self.short = tempfile.mkdtemp(prefix="dbench-%s." % fs, dir="/tmp")
        self.res.add("temp dir " + self.short, lambda: shutil.rmtree(self.short, ignore_errors=True))
        self.sock = os.path.join(self.short, "docker.sock")
        self.env = dict(os.environ, DOCKER_HOST="unix://" + self.sock, DOCKER_CONFIG=os.path.join(self.short, "cli"),
                        DOCKER_BUILDKIT="0")
        self.dev = None
        self.dhfs_proc = None
        self.dockerd = None
        self.registry = None
        self.port = None
        self.requests = None  # dhfs: fuse_cost.RequestCounter of the mount
        self.round_trip_us = None  # dhfs: one FUSE round trip on this machine

    # --- set-up
    def start(self, rep):
        size = parse_size(self.a.size)
        with open(self.image, "ab"):
            pass
        os.truncate(self.image, size)
        cmd = ["losetup", "-f", "--show"] + (["--direct-io=on"] if self.a.loop_dio == "on" else []) + [self.image]
        self.dev = run(cmd, timeout=60)[1].strip()
        dev = self.dev
        self.res.add("loop device " + dev, lambda: run(["losetup", "-d", dev], timeout=60, check=False))
        os.makedirs(self.mnt, exist_ok=True)
        mnt = self.mnt
        if self.fs == "ext4":
            run(["mkfs.ext4", "-q", "-F", dev], timeout=300)
            self.res.add("mounts under " + mnt, lambda: [unmount(m) for m in mounts_under(mnt)])
            run(["mount", dev, self.mnt], timeout=60)
        else:
            b = self.a.dhfs_bin
            run([os.path.join(b, "mkfs.dhfs"), "-f", dev], timeout=300)
            logf = open(os.path.join(self.logs, "dhfs-rep%d.log" % rep), "a")
            self.dhfs_proc = subprocess.Popen([os.path.join(b, "dhfs"), dev, self.mnt, "-f", "-o",
                                              ",".join(filter(None, ["allow_other", self.a.dhfs_mount_opts]))],
                                              stdout=logf, stderr=subprocess.STDOUT)
            proc = self.dhfs_proc
            # undone in reverse: unmount first, then the daemon writes its
            # final checkpoint and exits by itself (stopped if it does not)
            self.res.add("dhfs daemon", lambda: wait_then_stop(proc, 60))
            self.res.add("mounts under " + mnt, lambda: [unmount(m) for m in mounts_under(mnt)])
            end = time.monotonic() + 10
            while not any(l.split()[1] == self.mnt for l in open("/proc/mounts")):
                if proc.poll() is not None or time.monotonic() > end:
                    raise BenchError("dhfs did not mount %s" % dev)
                time.sleep(0.05)
            self.requests = fuse_cost.RequestCounter(os.path.join(b, "dhfsctl"), self.mnt)
            self.round_trip_us = fuse_cost.round_trip_us(self.mnt, self.short)
        self.start_dockerd(rep)
        self.start_registry()

    def start_dockerd(self, rep):
        conf = os.path.join(self.short, "daemon.json")
        with open(conf, "w") as f:
            json.dump({"deprecated-key-path": os.path.join(self.short, "key.json")}, f)
        logf = open(os.path.join(self.logs, "dockerd-%s-rep%d.log" % (self.fs, rep)), "a")
        self.dockerd = subprocess.Popen(
            [DOCKERD, "--config-file", conf, "--data-root", os.path.join(self.mnt, "docker"),
             "--exec-root", os.path.join(self.short, "exec"), "--pidfile", os.path.join(self.short, "docker.pid"),
             "-H", "unix://" + self.sock, "--iptables=false", "--ip-masq=false", "--bridge=none",
             "--storage-driver=overlay2"], stdout=logf, stderr=subprocess.STDOUT)
        proc, execroot = self.dockerd, os.path.join(self.short, "exec") + "/"
        # dockerd first, then whatever of its containerd and shims is left
        self.res.add("containerd and shims", lambda: [stop_pid(p, 10) for p in pids_naming(execroot)])
        self.res.add("dockerd", lambda: reap(proc, 60))
        end = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise BenchError("dockerd exited during start-up (see logs/dockerd-%s-rep%d.log)" % (self.fs, rep))
            if subprocess.run([DOCKER, "version"], env=self.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0:
                break
            if time.monotonic() > end:
                raise BenchError("dockerd did not answer within 60 s")
            time.sleep(0.1)
        driver = self.docker("info", "--format", "{{.Driver}}").strip()
        if driver != "overlay2":
            raise BenchError("dockerd on %s uses storage driver %r, not overlay2" % (self.fs, driver))

    def start_registry(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        store = os.path.join(self.work, "registry-" + self.fs)
        shutil.rmtree(store, ignore_errors=True)
        os.makedirs(store)
        self.res.add("registry storage", lambda: shutil.rmtree(store, ignore_errors=True))
        conf = os.path.join(self.short, "registry.yml")
        with open(conf, "w") as f:
            f.write("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
                    "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n"
                    "http:\n  addr: 127.0.0.1:%d\n" % (store, self.port))
        logf = open(os.path.join(self.logs, "registry-%s.log" % self.fs), "a")
        self.registry = subprocess.Popen([REGISTRY, "serve", conf], stdout=logf, stderr=subprocess.STDOUT)
        proc = self.registry
        self.res.add("registry", lambda: reap(proc, 10))
        end = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/v2/" % self.port, timeout=1)
                return
            except Exception:
                if proc.poll() is not None or time.monotonic() > end:
                    raise BenchError("the registry did not start on 127.0.0.1:%d" % self.port)
                time.sleep(0.1)

    # --- teardown (normal path; the Resources undo the same on failure)
    def stop(self):
        self.res.release_all()

    # --- helpers
    def docker(self, *args, input=None, timeout=900):
        return run([DOCKER] + list(args), timeout=timeout, env=self.env, input=input)[1]

    def used_bytes(self):
        if self.fs == "dhfs":  # frees count once committed; the kernel does not forward syncfs to FUSE
            run([os.path.join(self.a.dhfs_bin, "dhfsctl"), "sync", self.mnt], timeout=120)
        else:
            run(["sync", "-f", self.mnt], timeout=120)
        st = os.statvfs(self.mnt)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def saved_bytes(self):
        """dhfs only: bytes that sharing (clones, copy-ups, dedup) saves, from dhfsctl df."""
        out = run([os.path.join(self.a.dhfs_bin, "dhfsctl"), "--json", "df", self.mnt], timeout=60)[1]
        return json.loads(out)["saved_bytes"]

    # --- the workflow
    def workflow(self, tarball, ctx, rep):
        a, res = self.a, {}
        reg = "127.0.0.1:%d" % self.port

        def step(name, fn):
            run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], timeout=600)
            before = self.requests.snapshot() if self.requests else None
            t = time.perf_counter()
            fn()
            res[name + "_s"] = time.perf_counter() - t
            if before:
                # Everything on the mount during the step: docker's, containerd's and the
                # containers' requests alike.
                d = self.requests.difference(before, self.requests.snapshot())
                if d:
                    res[name + "_requests"] = d["count"]
                    res[name + "_waited"] = fuse_cost.waited_requests(d["kinds"])
                    res[name + "_daemon_s"] = d["daemon_s"]
                    res[name + "_round_trips_s"] = res[name + "_waited"] * self.round_trip_us / 1e6
                    for kind, n in d["kinds"].items():
                        res["%s_count_%s" % (name, kind)] = n
                    for kind, sec in d["kind_s"].items():
                        res["%s_seconds_%s" % (name, kind)] = sec
            res[name + "_used"] = self.used_bytes()
            if self.fs == "dhfs":
                res[name + "_saved"] = self.saved_bytes()
            log("  %s %s: %.2f s, %.1f MiB used" % (self.fs, name, res[name + "_s"], res[name + "_used"] / 2 ** 20))

        res["start_used"] = self.used_bytes()
        if self.round_trip_us is not None:
            res["round_trip_us"] = self.round_trip_us

        def do_import():
            with open(tarball, "rb") as f:
                run([DOCKER, "import", "-", "bench/base:1"], timeout=900, env=self.env, input=f.read())
        step("import", do_import)
        step("build", lambda: self.docker("build", "--network", "none", "-q", "-t", "bench/app:1", ctx))

        def do_push():
            self.docker("tag", "bench/app:1", reg + "/bench/app:1")
            self.docker("push", "-q", reg + "/bench/app:1")
        step("push", do_push)

        def do_pull():
            self.docker("rmi", "bench/app:1", reg + "/bench/app:1")
            out = self.docker("pull", reg + "/bench/app:1")
            if "Downloaded newer image" not in out:
                raise BenchError("pull did not download the image: %s" % out.strip().splitlines()[-1])
        step("pull", do_pull)

        script = ("set -e; dd if=/dev/urandom of=/data.bin bs=1M count=%d conv=fsync 2>/dev/null;"
                  " cat /data.bin > /dev/null; cat /app/big*.bin > /dev/null;"
                  " find /payload -type f | xargs cat > /dev/null;"
                  " for f in /payload/d2[0-3]/*; do echo c >> $f; done; sync" % a.write_mib)

        def do_run():
            ids = [self.docker("run", "-d", "--network", "none", "--name", "bench%d" % i, reg + "/bench/app:1",
                               "sh", "-c", script).strip() for i in range(a.containers)]
            codes = self.docker("wait", *ids).split()
            if codes != ["0"] * len(ids):
                raise BenchError("containers exited with %s" % " ".join(codes))
        step("run", do_run)

        def do_remove():
            self.docker("rm", *["bench%d" % i for i in range(a.containers)])
            self.docker("rmi", reg + "/bench/app:1", "bench/base:1")
            self.docker("system", "prune", "-af")
        step("remove", do_remove)
        return res


# ------------------------------------------------------------------ report

def fmt_s(v):
    return "%.2f" % v if v < 100 else "%.0f" % v


def fmt_mib(v):
    return "%.1f" % (v / 2 ** 20)


def table(fss, med):
    rows = []
    cols = ["step"] + [fs for fs in fss] + (["dhfs/ext4"] if fss == FILESYSTEMS else [])
    for key, title in STEPS:
        vals = [med[fs].get(key + "_s") for fs in fss]
        row = ["%s (s)" % title] + [fmt_s(v) if v is not None else "—" for v in vals]
        if len(cols) > len(fss) + 1:
            row.append("%.2f" % (vals[1] / vals[0]) if None not in vals and vals[0] > 0 else "—")
        rows.append(row)
    total = [sum(med[fs].get(k + "_s", 0) for k, _ in STEPS) for fs in fss]
    rows.append(["**whole workflow (s)**"] + ["**%s**" % fmt_s(t) for t in total] +
                (["**%.2f**" % (total[1] / total[0])] if len(cols) > len(fss) + 1 else []))
    for key, title in [("start", "dockerd started, nothing stored")] + STEPS:
        vals = [med[fs].get(key + "_used") for fs in fss]
        if key != "start":
            vals = [v - med[fs]["start_used"] if v is not None else None for v, fs in zip(vals, fss)]
        label = "space used after: %s (MiB%s)" % (title.split(" (")[0] if key != "start" else title,
                                                  "" if key == "start" else ", above the start")
        row = [label] + [fmt_mib(v) if v is not None else "—" for v in vals]
        if len(cols) > len(fss) + 1:
            row.append("%.2f" % (vals[1] / vals[0]) if None not in vals and vals[0] > 2 ** 20 else "—")
        rows.append(row)
    if "dhfs" in fss:
        for key, title in STEPS:
            v = med["dhfs"].get(key + "_saved")
            row = ["dhfs: saved by shared extents after: %s (MiB)" % title.split(" (")[0]]
            row += ["—" if fs != "dhfs" else (fmt_mib(v) if v is not None else "—") for fs in fss]
            if len(cols) > len(fss) + 1:
                row.append("—")
            rows.append(row)
    return report.table(cols, rows)


def requests_table(m):
    """dhfs's FUSE requests per step (medians), or None if none were counted."""
    if not any(m.get(k + "_requests") is not None for k, _ in STEPS):
        return None
    cols = ["step", "dhfs s", "requests", "waited for", "commonest kinds", "daemon s", "most daemon time (s)",
            "round trips s"]

    def by_kind(prefix):  # (kind, value) of the keys `prefix`KIND, largest first
        return sorted(((k[len(prefix):], v) for k, v in m.items() if k.startswith(prefix)), key=lambda kv: -kv[1])
    rows = []
    for key, title in STEPS:
        if m.get(key + "_requests") is None:
            continue
        kinds, kind_s = by_kind(key + "_count_"), by_kind(key + "_seconds_")
        rows.append([title.split(" (")[0], fmt_s(m[key + "_s"]), "%.0f" % m[key + "_requests"],
                     "%.0f" % m[key + "_waited"], ", ".join("%s %.0f" % kv for kv in kinds[:4]),
                     fmt_s(m[key + "_daemon_s"]), ", ".join("%s %.2f" % kv for kv in kind_s[:3]),
                     fmt_s(m[key + "_round_trips_s"])])
    return report.table(cols, rows)


# ------------------------------------------------------------------ main

def main(argv):
    a = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("docker_bench.py: run as root (loop devices, mounts, dockerd)")
    fss = FILESYSTEMS if not a.only else [f.strip() for f in a.only.split(",") if f.strip()]
    for fs in fss:
        if fs not in FILESYSTEMS:
            raise SystemExit("docker_bench.py: unknown filesystem %r (ext4, dhfs)" % fs)
    for x in (DOCKER, DOCKERD, REGISTRY, BUSYBOX):
        if not os.access(x, os.X_OK):
            raise SystemExit("docker_bench.py: %s missing (apt-get install docker.io docker-registry busybox-static)" % x)
    if "dhfs" in fss:
        a.dhfs_bin = os.path.abspath(a.dhfs_bin)
        for t in ("mkfs.dhfs", "dhfs", "dhfsctl"):
            if not os.access(os.path.join(a.dhfs_bin, t), os.X_OK):
                raise SystemExit("docker_bench.py: %s/%s missing (--dhfs-bin)" % (a.dhfs_bin, t))
    started = datetime.datetime.now().replace(microsecond=0)
    out = a.out or os.path.join(BENCH_DIR, "results", "%s-docker" % started.date().isoformat())
    logs = os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)
    set_log_file(os.path.join(logs, "run.log"))
    os.makedirs(a.workdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="run.", dir=a.workdir)
    res = Resources()
    if not os.path.exists("/run/docker"):  # dockerd makes /run/docker/plugins whatever its exec-root
        res.add("/run/docker", lambda: [os.rmdir(d) for d in ("/run/docker/plugins", "/run/docker")
                                        if os.path.isdir(d) and not os.listdir(d)])
    res.add("work dir", lambda: shutil.rmtree(work, ignore_errors=True))

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    results = {fs: {} for fs in fss}
    failures = []
    machine = {}
    try:
        log("docker workflow bench: %s, image %s, %d container(s) x %d MiB, %d repetition(s)" % (
            ", ".join(fss), a.size, a.containers, a.write_mib, a.repeat))

        class Backing:  # what report.machine() describes
            path, size = os.path.join(work, "disk.img"), parse_size(a.size)

            def describe(self):
                return "image file %s (%s), loop device with direct I/O %s, reformatted for every run" % (
                    self.path, a.size, a.loop_dio)
        machine = report.machine(work, Backing(), REPO)
        machine["load average at start (1, 5, 15 min)"] = " ".join(open("/proc/loadavg").read().split()[:3])
        machine["docker"] = run([DOCKERD, "--version"])[1].strip()
        machine["docker-registry"] = run(["dpkg-query", "-W", "-f=${Version}", "docker-registry"])[1].strip()
        log("inputs: base rootfs (%d files, %d MiB) and build context (%d MiB)" % (a.base_files, a.base_mib, a.copy_mib))
        tarball, ctx = make_inputs(work, a)
        # Filled once with data, shared by every filesystem: writes into never
        # written blocks of a fresh image file are much slower on this kind of VM,
        # which would penalise whichever filesystem ran first.
        log("filling the image file (%s)" % a.size)
        run(["fio", "--name=fill", "--filename=" + Backing.path, "--rw=write", "--bs=4M",
             "--size=%d" % Backing.size, "--direct=1", "--ioengine=psync", "--end_fsync=1",
             "--refill_buffers=1", "--fallocate=none", "--output=/dev/null"], timeout=1800)
        for rep in range(1, a.repeat + 1):
            for fs in fss:
                log("%s, repetition %d" % (fs, rep))
                host_res = Resources()
                host = DockerHost(fs, a, host_res, work, logs)
                try:
                    host.start(rep)
                    r = host.workflow(tarball, ctx, rep)
                    for k, v in r.items():
                        results[fs].setdefault(k, []).append(v)
                except BenchError as e:
                    failures.append({"fs": fs, "rep": rep, "error": str(e)})
                    log("  %s FAILED: %s" % (fs, e))
                finally:
                    host_res.release_all()
    except (KeyboardInterrupt, Interrupted) as e:
        failures.append({"fs": "-", "rep": 0, "error": "interrupted (%s)" % (e or "SIGINT")})
        log("interrupted")
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        res.release_all()

    if machine:
        machine["load average at the end (1, 5, 15 min)"] = " ".join(open("/proc/loadavg").read().split()[:3])
    med = {fs: {k: statistics.median(v) for k, v in results[fs].items()} for fs in fss}
    cmdline = "bench/docker_bench.py " + " ".join(argv)
    tbl = table(fss, med) if all(med[fs] for fs in fss) else "(no complete run)"
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"command": cmdline, "started": started.isoformat(), "args": vars(a), "results": results,
                   "medians": med, "failures": failures, "machine": machine}, f, indent=1)
    lines = ["# dhfs docker workflow benchmark, %s" % started.isoformat(), "",
             "Command: `%s`  " % cmdline,
             "Medians of %d repetition(s). Each filesystem in turn on a loop device over the same image file "
             "(%s), formatted afresh, with a private dockerd (overlay2) whose data-root is on it and a fresh "
             "local registry (registry storage on the host disk, not on the filesystem under test). "
             "Caches dropped before every step. Space: statfs used bytes of the filesystem (dhfs: after "
             "`dhfsctl sync`, ext4: after `sync -f`), relative to right after dockerd started." % (a.repeat, a.size),
             "",
             "Workload: base rootfs of busybox + %d payload files (%d MiB); the build COPYs %d MiB in 8 files and "
             "appends to every file of 4 payload directories (copy-up) and deletes 4 others; %d containers run "
             "at once, each writes %d MiB from /dev/urandom with fsync, reads it back, reads the image's files "
             "and appends to the files of 4 payload directories." % (
                 a.base_files, a.base_mib, a.copy_mib, a.containers, a.write_mib), "",
             "## Results", "", tbl, ""]
    rq = requests_table(med["dhfs"]) if "dhfs" in med else None
    if rq:
        lines += ["## dhfs's FUSE requests per step", "",
                  "Medians of the requests dhfs answered during each step (`dhfsctl --json requests` before "
                  "and after; docker's, containerd's and the containers' requests alike), those someone waited "
                  "for (all but %s), the daemon's own time for them (summed over its threads), and the "
                  "waited-for requests times one round trip (%.1f us here, a getxattr answered at once; see "
                  "bench/README.md, \"Where dhfs's time goes\"). Many processes issue requests at once in "
                  "most steps, so the round trips are not a floor under the step's time as they are for an "
                  "untar." % (", ".join(sorted(fuse_cost.BACKGROUND_KINDS)), med["dhfs"].get("round_trip_us", 0)),
                  "", rq, ""]
    if failures:
        lines += ["## Failures", ""] + ["- %s rep %s: %s" % (f["fs"], f["rep"], f["error"]) for f in failures] + [""]
    lines += ["## Machine", ""] + ["- %s: %s" % (k, v) for k, v in machine.items()] + [""]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines))
    print(tbl)
    print("Report: %s" % os.path.join(out, "report.md"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
