"""The jobs and the figures (metrics) they produce.

Every job runs identically on every filesystem: same fio parameters, same files, same
cache handling (`sync; echo 3 > /proc/sys/vm/drop_caches` before every job, so every
read is cold). I/O is buffered (direct=0) everywhere; see README.md for why.
"""

import contextlib
import json
import os
import sys
import time

from .util import (BenchError, drop_caches, fmt_count, fmt_size, log_quiet, run, run_timed,
                   statfs_used)

FSOPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fsops.py")


# ------------------------------------------------------------------------------ metrics

class Metric:
    def __init__(self, mid, label, unit, better, group, short):
        self.id, self._label, self.unit, self.better, self.group = mid, label, unit, better, group
        self.short = short  # chart axis label
        self.job = mid.split(".")[0]

    def label(self, prof):
        p = dict(prof)
        for k in ("seq_size", "clone_size", "rand_read_io", "rand_write_io", "mixed_io"):
            p[k] = fmt_size(prof[k])
        p["tree_files"] = fmt_count(prof["tree_files"])
        p["tree_mb"] = "%d MB" % round(prof["tree_bytes"] / 1e6)
        p["dir_entries"] = fmt_count(prof["dir_entries"])
        p["million_files"] = fmt_count(prof["million_files"])
        p["million_dirs"] = fmt_count(prof["million_dirs"])
        return self._label.format(**p)

    def higher_is_better(self):
        return self.better == "higher"


M = Metric
METRICS = [
    M("seqwrite.mbps", "seq write 1 MiB, {seq_size}, end_fsync", "MB/s", "higher", "sequential",
      "seq write"),
    M("seqread.mbps", "seq read 1 MiB, cold", "MB/s", "higher", "sequential",
      "seq read"),
    M("randwrite1.iops", "rand write 4 KiB QD1 (psync), end_fsync", "IOPS", "higher", "random",
      "rand write QD1"),
    M("randwrite32.iops", "rand write 4 KiB QD32 (io_uring), end_fsync", "IOPS", "higher", "random",
      "rand write QD32"),
    M("randread1.iops", "rand read 4 KiB cold, QD1 (psync)", "IOPS", "higher", "random",
      "rand read QD1"),
    M("randread32.iops", "rand read 4 KiB cold, QD32 (io_uring)", "IOPS", "higher", "random",
      "rand read QD32"),
    M("mixed.iops", "randrw 70/30 4 KiB cold, QD32, end_fsync (r+w)", "IOPS", "higher", "random",
      "randrw 70/30"),
    M("fsync.iops", "4 KiB write + fsync each, QD1 (database-like)", "IOPS", "higher", "random",
      "write+fsync"),
    M("untar.extract_s", "untar {tree_files} files, {tree_mb}", "s", "lower", "smallfiles",
      "untar"),
    M("untar.sync_s", "sync after the untar", "s", "lower", "smallfiles",
      "sync"),
    M("untar.stat_s", "find + stat all, cold", "s", "lower", "smallfiles",
      "stat all"),
    M("untar.read_s", "read all files, cold", "s", "lower", "smallfiles",
      "read all"),
    M("untar.rm_s", "rm -rf the tree", "s", "lower", "smallfiles",
      "rm -rf"),
    M("bigdir.create_s", "create {dir_entries} files in one directory", "s", "lower", "bigdir",
      "create"),
    M("bigdir.list_s", "list that directory, cold (readdir)", "s", "lower", "bigdir",
      "list"),
    M("bigdir.delete_s", "delete the {dir_entries} files", "s", "lower", "bigdir",
      "delete"),
    M("clone.base_read_mbps", "cold seq read of an unshared {clone_size} file", "MB/s", "higher", "sequential",
      "unshared file read"),
    M("clone.clone_s", "clone it (cp --reflink=auto)", "s", "lower", "clone",
      "clone"),
    M("clone.clone_sync_s", "clone it, then sync", "s", "lower", "clone",
      "clone + sync"),
    M("clone.space_mib", "new space used by the clone", "MiB", "lower", "space",
      "clone"),
    M("clone.overwrite_iops", "25% random 4 KiB overwrites of the clone, end_fsync", "IOPS", "higher", "random",
      "clone overwrites"),
    M("clone.read_mbps", "cold seq read of the clone after the overwrites", "MB/s", "higher", "sequential",
      "clone read after overwrites"),
    M("copyup.time_s", "overlay copy-up of a {clone_size} lower file, cold", "s", "lower", "clone",
      "copy-up"),
    M("copyup.space_mib", "new space used by the copy-up", "MiB", "lower", "space",
      "copy-up"),
    M("million.create_s", "create {million_files} files in {million_dirs} directories", "s", "lower", "million",
      "create"),
    M("million.mount_s", "mount holding them (until the root is listable)", "s", "lower", "million",
      "mount"),
    M("million.stat_s", "find + stat all of them, cold", "s", "lower", "million",
      "stat all"),
    M("million.rss_mib", "FUSE daemon RSS after that", "MiB", "lower", "million-rss",
      "RSS"),
    M("million.rss_per_inode", "FUSE daemon RSS per inode", "B/inode", "lower", "million-rss",
      "RSS/inode"),
]
BY_ID = {m.id: m for m in METRICS}

JOBS = ["seqwrite", "seqread", "randread1", "randread32", "randwrite1", "randwrite32",
        "mixed", "fsync", "untar", "bigdir", "clone", "copyup", "million"]
RAW_JOBS = ["seqwrite", "seqread", "randread1", "randread32"]
JOB_ALIASES = {"seq": ["seqwrite", "seqread"],
               "rand": ["randread1", "randread32", "randwrite1", "randwrite32", "mixed"],
               "randread": ["randread1", "randread32"], "randwrite": ["randwrite1", "randwrite32"],
               "smallfiles": ["untar"], "dir": ["bigdir"], "dir100k": ["bigdir"],
               "overlay": ["copyup"], "clone-copyup": ["clone", "copyup"]}


# ---------------------------------------------------------------------------- context

class Ctx:
    """What a job needs: where to work, the profile, where raw output goes."""

    def __init__(self, fs, target, prof, raw_dir, tree=None, res=None, merged=None,
                 remount=None, daemon_pid=None, dev=None, requests=None):
        self.fs = fs                # FileSystem, or None for the raw device
        self.target = target        # mount point, or the device for raw
        self.prof = prof
        self.raw_dir = raw_dir
        self.tree = tree            # (tarball path, meta)
        self.res = res
        self.merged = merged        # mount point for kernel overlayfs
        self.remount = remount      # callable -> seconds (million job)
        self.daemon_pid = daemon_pid
        self.dev = dev
        self.timeout = prof["timeout"]
        self.requests = requests    # fuse_cost.RequestCounter of a dhfs mount, else None
        self.fuse_costs = {}        # metric -> what counting() measured for it

    @contextlib.contextmanager
    def counting(self, metric, ops=None, per="I/O"):
        """Counts the FUSE requests dhfs answers during the block, for `metric` (a no-op on
        the other filesystems). Yields a dict in which the block sets "ops": how many
        operations (`per`: I/O, MiB, entry, ...) the figure is made of, for the per-operation
        view of the report."""
        box = {"ops": ops}
        if self.requests is None:
            yield box
            return
        before = self.requests.snapshot()
        t = time.monotonic()
        yield box
        seconds = time.monotonic() - t
        d = self.requests.difference(before, self.requests.snapshot())
        if d is not None:
            d.update(seconds=seconds, ops=box["ops"], per=per)
            self.fuse_costs[metric] = d

    @property
    def raw(self):
        return self.fs is None

    def path(self, name):
        return os.path.join(self.target, name)


# --------------------------------------------------------------------------------- fio

def fio(ctx, tag, filename, size, *params):
    """Run one fio job with the common parameters; return its JSON job record."""
    os.makedirs(ctx.raw_dir, exist_ok=True)
    out = os.path.join(ctx.raw_dir, tag + ".json")
    args = ["fio", "--name=" + tag, "--filename=" + filename, "--size=%d" % size,
            "--output-format=json", "--output=" + out,
            "--direct=0", "--fallocate=none", "--randrepeat=1", "--ioengine=psync"]
    args += ["--" + p for p in params]
    run(args, timeout=ctx.timeout)
    with open(out) as f:
        text = f.read()
    try:
        data = json.loads(text[text.index("{"):])
    except ValueError:
        raise BenchError("fio %s: unreadable JSON output %s" % (tag, out))
    job = data["jobs"][0]
    if job.get("error"):
        raise BenchError("fio %s: error %d" % (tag, job["error"]))
    return job


def _mbps(job, d):
    if job[d]["io_bytes"] <= 0:
        raise BenchError("fio did no %s I/O" % d)
    return job[d]["bw_bytes"] / 1e6


def _iops(job, d):
    if job[d]["total_ios"] <= 0:
        raise BenchError("fio did no %s I/O" % d)
    return job[d]["iops"]


# Fresh random data in every write: no help from dedup or compression.
WRITE = ("refill_buffers=1",)
# Sequential writes also need randrepeat=0: fio seeds its generators the same way in
# every run otherwise, and writes the same "random" bytes into every file, which dhfs
# then shared with the file written before. (Random 4 KiB writes keep the fixed seed,
# so that every filesystem gets the same offsets; they complete almost no 64 KiB window
# that dhfs could share.)
SEQ_WRITE = WRITE + ("randrepeat=0",)
QD32 = ("ioengine=io_uring", "iodepth=32")


def file_size(path, timeout=60):
    rc, out, _ = run(["stat", "-c", "%s", path], timeout=timeout, check=False)
    return int(out) if rc == 0 else None


def ensure_file(ctx, name, size):
    """A fully written, fsynced file of size bytes (untimed preparation)."""
    path = name if ctx.raw else ctx.path(name)
    if ctx.raw or file_size(path) == size:
        return path
    bs = "1M" if size % (1 << 20) == 0 else "4k"
    fio(ctx, "prep-" + os.path.basename(name), path, size, "rw=write", "bs=" + bs, "end_fsync=1", *SEQ_WRITE)
    return path


def helper(ctx, *args, timeout=None):
    _, out, _ = run([sys.executable, FSOPS] + [str(a) for a in args], timeout=timeout or ctx.timeout)
    return json.loads(out)


# -------------------------------------------------------------------------------- jobs

# The raw device column: the same patterns with O_DIRECT on the bare device, so that it
# shows what the device itself can do (buffered writes to a bare block device go through
# the block device's page cache and are far slower than the device).
RAW_SEQ = ("direct=1", "ioengine=io_uring", "iodepth=8")


def job_seqwrite(ctx):
    p = ctx.prof
    if ctx.raw:
        j = fio(ctx, "seqwrite", ctx.target, p["seq_size"], "rw=write", "bs=1M", *(SEQ_WRITE + RAW_SEQ))
        return {"seqwrite.mbps": _mbps(j, "write")}
    path = ctx.path("data.bin")
    run(["rm", "-f", path], timeout=ctx.timeout)
    drop_caches()
    with ctx.counting("seqwrite.mbps", p["seq_size"] >> 20, "MiB"):
        j = fio(ctx, "seqwrite", path, p["seq_size"], "rw=write", "bs=1M", "end_fsync=1", *SEQ_WRITE)
    return {"seqwrite.mbps": _mbps(j, "write")}


def _data(ctx):
    return ensure_file(ctx, ctx.target if ctx.raw else "data.bin", ctx.prof["seq_size"])


def job_seqread(ctx):
    path = _data(ctx)
    drop_caches()
    with ctx.counting("seqread.mbps", ctx.prof["seq_size"] >> 20, "MiB"):
        j = fio(ctx, "seqread", path, ctx.prof["seq_size"], "rw=read", "bs=1M", *(RAW_SEQ if ctx.raw else ()))
    return {"seqread.mbps": _mbps(j, "read")}


def _randread(ctx, tag, *engine):
    p = ctx.prof
    path = _data(ctx)
    drop_caches()
    # random map on (default): every block at most once, so no read can hit the cache
    with ctx.counting(tag + ".iops") as c:
        j = fio(ctx, tag, path, p["seq_size"], "rw=randread", "bs=4k",
                "io_size=%d" % min(p["rand_read_io"], p["seq_size"]), "runtime=%d" % p["io_cap"],
                *(engine + (("direct=1",) if ctx.raw else ())))
        c["ops"] = j["read"]["total_ios"]
    return {tag + ".iops": _iops(j, "read")}


def job_randread1(ctx):
    return _randread(ctx, "randread1")


def job_randread32(ctx):
    return _randread(ctx, "randread32", *QD32)


def _randwrite(ctx, tag, *engine):
    p = ctx.prof
    path = _data(ctx)
    drop_caches()
    with ctx.counting(tag + ".iops") as c:
        j = fio(ctx, tag, path, p["seq_size"], "rw=randwrite", "bs=4k", "end_fsync=1",
                "io_size=%d" % min(p["rand_write_io"], p["seq_size"]), "runtime=%d" % p["io_cap"],
                *(WRITE + engine))
        c["ops"] = j["write"]["total_ios"]
    return {tag + ".iops": _iops(j, "write")}


def job_randwrite1(ctx):
    return _randwrite(ctx, "randwrite1")


def job_randwrite32(ctx):
    return _randwrite(ctx, "randwrite32", *QD32)


def job_mixed(ctx):
    p = ctx.prof
    path = _data(ctx)
    drop_caches()
    with ctx.counting("mixed.iops") as c:
        j = fio(ctx, "mixed", path, p["seq_size"], "rw=randrw", "rwmixread=70", "bs=4k", "end_fsync=1",
                "io_size=%d" % min(p["mixed_io"], p["seq_size"]), "runtime=%d" % p["io_cap"],
                *(WRITE + QD32))
        c["ops"] = ios = j["read"]["total_ios"] + j["write"]["total_ios"]
    # the write side's runtime includes the end_fsync
    seconds = max(j["job_runtime"], j["read"]["runtime"], j["write"]["runtime"]) / 1000.0
    if ios <= 0 or seconds <= 0:
        raise BenchError("fio mixed did no I/O")
    return {"mixed.iops": ios / seconds}


def job_fsync(ctx):
    p = ctx.prof
    size = p["fsync_count"] * 4096
    # overwrite a preallocated, written file (like a database log segment): each
    # write is followed by fsync; this measures the cost of a durable 4 KiB write
    path = ensure_file(ctx, "fsync.bin", size)
    drop_caches()
    with ctx.counting("fsync.iops") as c:
        j = fio(ctx, "fsync", path, size, "rw=write", "bs=4k", "fsync=1", "runtime=%d" % p["io_cap"], *SEQ_WRITE)
        c["ops"] = j["write"]["total_ios"]
    return {"fsync.iops": _iops(j, "write")}


def job_untar(ctx):
    tar, meta = ctx.tree
    dest = ctx.path("untar")
    run(["rm", "-rf", dest], timeout=ctx.timeout)
    run(["mkdir", dest], timeout=60)
    drop_caches()
    # the tarball sits on the host disk: read it into the page cache first so the
    # untar measures the filesystem under test, not the disk holding the tarball
    run(["dd", "if=" + tar, "of=/dev/null", "bs=1M", "status=none"], timeout=ctx.timeout)
    with ctx.counting("untar.extract_s", meta["entries"], "entry"):
        t_extract, _ = run_timed(["tar", "-xf", tar, "-C", dest], timeout=ctx.timeout)
    t_sync, _ = run_timed(["sync"], timeout=ctx.timeout)
    drop_caches()
    with ctx.counting("untar.stat_s", meta["entries"], "entry"):
        t_stat, out = run_timed("find %s -printf '%%s\\n' | wc -l" % dest, timeout=ctx.timeout, shell=True)
    if int(out) != meta["entries"] + 1:
        raise BenchError("after untar, find sees %s entries, expected %d" % (out.strip(), meta["entries"] + 1))
    drop_caches()
    with ctx.counting("untar.read_s", meta["files"], "file"):
        t_read, out = run_timed("find %s -type f -print0 | xargs -0 -r cat | wc -c" % dest,
                                timeout=ctx.timeout, shell=True)
    if int(out) != meta["regular_bytes"]:
        raise BenchError("reading the untarred tree gave %s bytes, expected %d" % (out.strip(), meta["regular_bytes"]))
    with ctx.counting("untar.rm_s", meta["entries"], "entry"):
        t_rm, _ = run_timed(["rm", "-rf", dest], timeout=ctx.timeout)
    run(["sync"], timeout=ctx.timeout)
    return {"untar.extract_s": t_extract, "untar.sync_s": t_sync, "untar.stat_s": t_stat,
            "untar.read_s": t_read, "untar.rm_s": t_rm}


def job_bigdir(ctx):
    n = ctx.prof["dir_entries"]
    root = ctx.path("bigdir")
    run(["rm", "-rf", root], timeout=ctx.timeout)
    drop_caches()
    with ctx.counting("bigdir.create_s", n, "entry"):
        create = helper(ctx, "create", root, n)["seconds"]
    drop_caches()
    with ctx.counting("bigdir.list_s", n, "entry"):
        listing = helper(ctx, "list", root, n)["seconds"]
    with ctx.counting("bigdir.delete_s", n, "entry"):
        delete = helper(ctx, "delete", root, n)["seconds"]
    run(["sync"], timeout=ctx.timeout)
    return {"bigdir.create_s": create, "bigdir.list_s": listing, "bigdir.delete_s": delete}


def job_clone(ctx):
    size = ctx.prof["clone_size"]
    base = ensure_file(ctx, "clone-base.bin", size)
    clone = ctx.path("clone.bin")
    run(["rm", "-f", clone], timeout=ctx.timeout)
    drop_caches()
    with ctx.counting("clone.base_read_mbps", size >> 20, "MiB"):
        j = fio(ctx, "clone-base-read", base, size, "rw=read", "bs=1M")
    r = {"clone.base_read_mbps": _mbps(j, "read")}
    drop_caches()
    used0 = statfs_used(ctx.target)
    with ctx.counting("clone.clone_s", 1, "clone"):
        t_cp, _ = run_timed(["cp", "--reflink=auto", base, clone], timeout=ctx.timeout)
    t_sync, _ = run_timed(["sync"], timeout=ctx.timeout)
    used1 = statfs_used(ctx.target)
    if file_size(clone) != size:
        raise BenchError("the clone has %s bytes, expected %d" % (file_size(clone), size))
    r.update({"clone.clone_s": t_cp, "clone.clone_sync_s": t_cp + t_sync,
              "clone.space_mib": (used1 - used0) / float(1 << 20)})
    # 25% of the clone's 4 KiB blocks, random order, each block once (random map on)
    with ctx.counting("clone.overwrite_iops") as c:
        j = fio(ctx, "clone-overwrite", clone, size, "rw=randwrite", "bs=4k", "io_size=%d" % (size // 4),
                "norandommap=0", "end_fsync=1", *WRITE)
        c["ops"] = j["write"]["total_ios"]
    r["clone.overwrite_iops"] = _iops(j, "write")
    drop_caches()
    with ctx.counting("clone.read_mbps", size >> 20, "MiB"):
        j = fio(ctx, "clone-read", clone, size, "rw=read", "bs=1M")
    r["clone.read_mbps"] = _mbps(j, "read")
    run(["rm", "-f", clone], timeout=ctx.timeout)
    run(["sync"], timeout=ctx.timeout)
    return r


def _overlay_opts(lower, upper, work):
    opts = "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, upper, work)
    # full data copy-up (what docker's overlay2 does); no metadata-only copy-up
    if os.path.exists("/sys/module/overlay/parameters/metacopy"):
        opts += ",metacopy=off"
    return opts


def job_copyup(ctx):
    size = ctx.prof["clone_size"]
    ovl = ctx.path("ovl")
    lower, upper, work = (os.path.join(ovl, d) for d in ("lower", "upper", "work"))
    run(["rm", "-rf", ovl], timeout=ctx.timeout)
    run(["mkdir", "-p", lower, upper, work], timeout=60)
    ensure_file(ctx, "ovl/lower/big.bin", size)
    mark = ctx.res.mark()
    try:
        try:
            run(["mount", "-t", "overlay", "overlay", "-o", _overlay_opts(lower, upper, work), ctx.merged],
                timeout=120)
        except BenchError as e:
            # mount(8) only says "see dmesg": add what overlayfs said
            _, out, _ = run(["dmesg"], timeout=30, check=False)
            said = [l.split("]", 1)[-1].strip() for l in out.splitlines() if "overlayfs:" in l][-2:]
            raise BenchError("overlay mount failed: %s" % ("; ".join(said) or e))
        ctx.res.add_mount(ctx.merged)
        drop_caches()
        used0 = statfs_used(ctx.target)
        with ctx.counting("copyup.time_s", size >> 20, "MiB"):
            r = helper(ctx, "copyup", os.path.join(ctx.merged, "big.bin"))
        run(["sync"], timeout=ctx.timeout)
        used1 = statfs_used(ctx.target)
    finally:
        ctx.res.unwind(mark)
    got = file_size(os.path.join(upper, "big.bin"))
    if got != size + 1:
        raise BenchError("after copy-up the upper file has %s bytes, expected %d" % (got, size + 1))
    run(["rm", "-rf", ovl], timeout=ctx.timeout)
    run(["sync"], timeout=ctx.timeout)
    return {"copyup.time_s": r["seconds"], "copyup.space_mib": (used1 - used0) / float(1 << 20)}


def _rss_bytes(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def job_million(ctx):
    p = ctx.prof
    n, nd = p["million_files"], p["million_dirs"]
    root = ctx.path("million")
    run(["rm", "-rf", root], timeout=ctx.timeout * 4)
    drop_caches()
    create = helper(ctx, "create", root, n, nd, timeout=ctx.timeout * 4)["seconds"]
    run(["sync"], timeout=ctx.timeout)
    mount_s = ctx.remount()  # unmount, drop caches, mount again: timed
    drop_caches()
    t_stat, out = run_timed("find %s -printf '%%s\\n' | wc -l" % root, timeout=ctx.timeout * 2, shell=True)
    if int(out) != n + nd + 1:
        raise BenchError("find sees %s entries, expected %d" % (out.strip(), n + nd + 1))
    r = {"million.create_s": create, "million.mount_s": mount_s, "million.stat_s": t_stat}
    pid = ctx.daemon_pid() if ctx.daemon_pid else None
    if pid:
        rss = _rss_bytes(pid)
        if rss:
            r["million.rss_mib"] = rss / float(1 << 20)
            r["million.rss_per_inode"] = rss / float(n + nd + 1)
    log_quiet("million: %s" % r)
    return r


FUNCS = {name: globals()["job_" + name] for name in JOBS}
