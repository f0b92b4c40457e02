#!/usr/bin/python3
"""dhfs benchmark suite: the same fio and metadata jobs on ext4, XFS, btrfs,
fuse-overlayfs and dhfs, each on a loop device over the same image file (or on a real
device), with medians, ratios dhfs/peer, charts and the machine description written to a
results folder. See bench/README.md.

    sudo bench/run.py --mode quick          # < 5 min
    sudo bench/run.py --mode full           # what issues 3 and 7 ask for
    sudo bench/run.py --mode smoke          # CI: every job, tiny sizes, exit 1 on failure
"""

import argparse
import datetime
import json
import os
import shutil
import socket
import sys
import time
import traceback

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from benchlib import config, fuse_cost, load, report, tree  # noqa: E402
from benchlib.filesystems import ALIASES, ALL, NAMES, TITLES, DeviceBacking, ImageBacking  # noqa: E402
from benchlib.jobs import BY_ID, FUNCS, JOB_ALIASES, JOBS, RAW_JOBS, Ctx  # noqa: E402
from benchlib.guarded import run_guarded  # noqa: E402
from benchlib.resources import claim_workdir  # noqa: E402
from benchlib.util import (BenchError, drop_caches, fmt_size,  # noqa: E402
                           fmt_value, log, log_quiet, parse_size, run, set_log_file, which)

REPO = os.path.dirname(BENCH_DIR)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/run.py", description="dhfs benchmark suite (run as root).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="filesystems: %s\njobs: %s (million: full mode only unless asked for)\n"
               "job groups: %s" % (", ".join(NAMES), ", ".join(JOBS), ", ".join(sorted(JOB_ALIASES))))
    p.add_argument("--mode", choices=["smoke", "quick", "full"], default="quick",
                   help="smoke: CI, tiny sizes; quick: < 5 min; full: issue sizes (default quick)")
    p.add_argument("--size", help="size of the image file / used part of the device "
                   "(default: smoke 1G, quick 4G, full 8G)")
    p.add_argument("--workdir", default="/var/tmp/dhfs-bench",
                   help="image file, tarball and mount points (default /var/tmp/dhfs-bench)")
    p.add_argument("--device", help="real block device(s) instead of the image file: DEV (every "
                   "filesystem in turn; it is WIPED) or fs=DEV,fs=DEV")
    p.add_argument("--only", help="comma-separated filesystems (%s)" % ",".join(NAMES))
    p.add_argument("--jobs", help="comma-separated jobs or groups (%s)" % ",".join(JOBS))
    p.add_argument("--repeat", type=int, help="repetitions, medians reported (default 3; smoke 1)")
    p.add_argument("--out", help="results folder (default bench/results/<date>-<host>-<mode>; "
                   "smoke: <workdir>/smoke-results)")
    p.add_argument("--dhfs-bin", default=os.path.join(BENCH_DIR, "..", "build", "release", "tools"),
                   help="directory holding mkfs.dhfs and dhfs (default ../build/release/tools)")
    p.add_argument("--dhfs-mkfs-opts", default="", help="extra mkfs.dhfs arguments (space-separated)")
    p.add_argument("--dhfs-mount-opts", default="", help="extra dhfs -o options (comma-separated)")
    p.add_argument("--require-dhfs", action="store_true",
                   help="fail if the dhfs binaries are missing (for CI once dhfs is built)")
    p.add_argument("--loop-dio", choices=["on", "off"], default="on",
                   help="loop devices with direct I/O to the image file (default on)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a profile field, e.g. --set clone_size=1G (see benchlib/config.py)")
    p.add_argument("--fresh-image", action="store_true", help="recreate and refill the image file")
    p.add_argument("--report", metavar="DIR",
                   help="only rewrite report.md and the charts of an earlier run from DIR/results.json")
    p.add_argument("--keep-image", action="store_true", help="keep the image file after the run "
                   "(default: kept for quick/full so the next run skips the fill, removed for smoke)")
    return p.parse_args(argv)


def select(value, known, aliases, what):
    if not value:
        return None
    out = []
    for item in value.split(","):
        item = item.strip().lower()
        if not item:
            continue
        names = aliases.get(item, item)
        for n in (names if isinstance(names, list) else [names]):
            if n not in known:
                raise SystemExit("run.py: unknown %s %r (known: %s)" % (what, item, ", ".join(known)))
            if n not in out:
                out.append(n)
    return out


class Run:
    """One benchmark run: state, results, and the per-filesystem loop."""

    def __init__(self, args):
        self.args = args
        self.failures = []          # {fs, rep, job, error}
        self.results = {}           # fs -> metric -> [values]
        self.status = {}            # fs -> text shown instead of figures ("not built")
        self.notes = []
        self.load = []              # {fs, rep, job, seconds, foreign_cores, busiest}
        self.fuse = {}              # dhfs metric -> [fuse_cost difference per rep]
        self.fuse_rt = []           # µs of one FUSE round trip on dhfs, per rep

    # ---------------------------------------------------------------- bookkeeping
    def record(self, fs, values):
        per = self.results.setdefault(fs, {})
        for k, v in values.items():
            per.setdefault(k, []).append(v)

    def fail(self, fs, rep, job, error):
        self.failures.append({"fs": fs, "rep": rep + 1, "job": job, "error": str(error)})
        log("  %s %s FAILED: %s" % (fs, job, error))

    def save(self):
        data = {"profile": self.prof, "columns": self.columns, "results": self.results,
                "status": self.status, "failures": self.failures, "notes": self.notes,
                "args": vars(self.args), "command": self.command, "started": self.started,
                "machine": getattr(self, "machine", {}), "tree": getattr(self, "tree_meta", None),
                "foreign_load": self.load, "repeat": getattr(self, "repeat", None),
                "jobs": getattr(self, "jobs", None), "storage": self.storage(),
                "finished": getattr(self, "finished", False),
                "fuse_requests": self.fuse, "fuse_round_trip_us": self.fuse_rt}
        tmp = os.path.join(self.out, "results.json.tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, os.path.join(self.out, "results.json"))

    def storage(self):
        b = getattr(self, "backings", None)
        return b["*"].describe() if b else "?"

    # ---------------------------------------------------------------- jobs
    def run_jobs(self, fs, name, target, rep, jobs, dev=None, requests=None):
        raw_dir = os.path.join(self.out, "raw", name, "rep%d" % (rep + 1))
        ctx = Ctx(fs, target, self.prof, raw_dir, tree=self.tree, res=self.res,
                  merged=self.merged_mnt, dev=dev,
                  remount=(lambda: self.remount(fs, dev, rep)) if fs else None,
                  daemon_pid=(lambda: fs.daemon_pid()) if fs else None, requests=requests)
        for i, job in enumerate(jobs):
            if fs is not None and job == "copyup" and not fs.overlay_copyup:
                continue
            try:
                if fs is not None:
                    fs.check_alive()
                t = time.monotonic()
                sample = load.Sample()
                values = FUNCS[job](ctx)
                foreign, busiest = load.measure(sample)
                self.record(name, values)
                for metric, cost in ctx.fuse_costs.items():
                    self.fuse.setdefault(metric, []).append(cost)
                seconds = time.monotonic() - t
                self.load.append({"fs": name, "rep": rep + 1, "job": job, "seconds": seconds,
                                  "foreign_cores": foreign, "busiest": busiest})
                shown = ", ".join("%s %s" % (fmt_value(v, BY_ID[k].unit), BY_ID[k].unit)
                                  for k, v in values.items())
                busy = ("  (other load %.1f cores: %s)" % (foreign, ", ".join(busiest) or "?")
                        if foreign >= 0.25 else "")
                log("  %-14s %-11s %s  [%.1f s]%s" % (name, job, shown, seconds, busy))
            except Exception as e:
                ctx.fuse_costs.clear()
                if not isinstance(e, BenchError):  # a bug in the suite: keep going, say so
                    log_quiet(traceback.format_exc())
                    e = "internal error: %s: %s" % (type(e).__name__, e)
                self.fail(name, rep, job, e)
                if fs is not None:
                    try:
                        fs.check_alive()
                    except BenchError as dead:
                        for rest in jobs[i + 1:]:
                            self.fail(name, rep, rest, "not run: %s" % dead)
                        break
            self.save()

    def request_counter(self, fs):
        """For dhfs: counts its FUSE requests per job, after measuring what one costs here."""
        if fs.name != "dhfs":
            return None
        ctl = fs.ctl()
        counter = fuse_cost.RequestCounter(ctl, self.target_mnt) if ctl else None
        if counter is None or counter.snapshot() is None:
            why = "dhfsctl requests does not answer" if ctl else "dhfsctl is not built"
            if self.args.require_dhfs:
                raise BenchError("%s: no FUSE request counts (--require-dhfs)" % why)
            log("  %s: no FUSE request counts in this repetition" % why)
            return None
        rt = fuse_cost.round_trip_us(self.target_mnt, self.args.workdir)
        self.fuse_rt.append(rt)
        log("  one FUSE round trip (getxattr answered at once): %.1f us" % rt)
        return counter

    def remount(self, fs, dev, rep):
        self.res.unwind(self.fs_mount_mark)
        drop_caches()
        self.fs_mount_mark = self.res.mark()
        return fs.mount(dev, self.target_mnt, self.res, self.daemon_log(fs, rep))

    def daemon_log(self, fs, rep):
        return os.path.join(self.out, "logs", "%s-rep%d.log" % (fs.name, rep + 1))

    def run_fs(self, fs, rep, jobs):
        if not jobs:
            return
        mark = self.res.mark()
        log("rep %d/%d  %s" % (rep + 1, self.repeat, TITLES[fs.name]))
        proc = None
        try:
            try:
                dev = self.backing_for(fs.name).attach(self.res)
                inodes = None
                if "million" in jobs:  # room for the files plus 10% (ext4 fixes it at mkfs)
                    inodes = int((self.prof["million_files"] + self.prof["million_dirs"]) * 1.1) + 10000
                fs.format(dev, inodes)
                self.fs_mount_mark = self.res.mark()
                fs.mount(dev, self.target_mnt, self.res, self.daemon_log(fs, rep))
                proc = fs.proc
                counter = self.request_counter(fs)
            except BenchError as e:
                for job in jobs:
                    self.fail(fs.name, rep, job, "not run: setup failed: %s" % e)
                return
            self.run_jobs(fs, fs.name, self.target_mnt, rep, jobs, dev, counter)
            proc = fs.proc or proc
        finally:
            self.res.unwind(mark)
            fs.proc = None
        if proc is not None and proc.returncode not in (0, None):
            self.fail(fs.name, rep, "teardown", "daemon exited with status %d after unmount" % proc.returncode)

    def run_raw(self, rep, jobs):
        jobs = [j for j in jobs if j in RAW_JOBS]
        if not jobs:
            return
        log("rep %d/%d  raw device" % (rep + 1, self.repeat))
        mark = self.res.mark()
        try:
            dev = self.backing_for("raw").attach(self.res)
            self.run_jobs(None, "raw", dev, rep, jobs)
        except BenchError as e:
            for job in jobs:
                self.fail("raw", rep, job, "not run: %s" % e)
        finally:
            self.res.unwind(mark)

    def backing_for(self, name):
        return self.backings.get(name) or self.backings["*"]

    # ---------------------------------------------------------------- main
    def main(self):
        a = self.args
        self.prof = config.profile(a.mode, a.set)
        if a.size:
            self.prof["image_size"] = parse_size(a.size)
        self.repeat = a.repeat or self.prof["repeat"]
        self.command = " ".join([os.path.relpath(sys.argv[0], REPO) if sys.argv[0] else "bench/run.py"] + sys.argv[1:])
        self.started = datetime.datetime.now().isoformat(timespec="seconds")

        only = select(a.only, NAMES, ALIASES, "filesystem") or NAMES
        jobs = select(a.jobs, JOBS, JOB_ALIASES, "job")
        if jobs is None:
            jobs = [j for j in JOBS if self.prof["jobs_default"] == "all" or j != "million"]
        self.jobs = jobs
        settings = {"dhfs_bin": os.path.realpath(a.dhfs_bin),
                    "dhfs_mkfs_opts": a.dhfs_mkfs_opts.split(),
                    "dhfs_mount_opts": [o for o in a.dhfs_mount_opts.split(",") if o],
                    "fuse_base_mnt": os.path.join(a.workdir, "mnt", "fuse-overlayfs-base")}
        self.filesystems = [cls(settings) for cls in ALL if cls.name in only]
        self.columns = [n for n in NAMES if n in only]

        # preflight: tools, space, tarball
        missing = [t for t in ("fio", "losetup", "tar", "mount", "umount") if not which(t)]
        for fs in self.filesystems:
            why = fs.available()
            if why and fs.name == "dhfs":
                self.status["dhfs"] = "not built"
                self.notes.append("dhfs %s" % why)
                log("dhfs: %s; running the peers only" % why)
                if a.require_dhfs:
                    raise BenchError("dhfs %s (--require-dhfs)" % why)
            elif why:
                missing.append(why.split()[0])
        if missing:
            raise BenchError("missing tools: %s (apt-get install fio xfsprogs btrfs-progs "
                             "fuse-overlayfs e2fsprogs util-linux)" % ", ".join(sorted(set(missing))))
        os.makedirs(a.workdir, exist_ok=True)
        self.lock, self.res = claim_workdir(a.workdir, "benchmark")
        for d in ("target", "merged", "fuse-overlayfs-base"):
            os.makedirs(os.path.join(a.workdir, "mnt", d), exist_ok=True)
        self.target_mnt = os.path.join(a.workdir, "mnt", "target")
        self.merged_mnt = os.path.join(a.workdir, "mnt", "merged")

        if a.device:
            self.backings = {}
            for item in a.device.split(","):
                fsname, sep, dev = item.rpartition("=")
                dev = os.path.realpath(dev)
                if not os.path.exists(dev) or not os.path.isabs(dev):
                    raise BenchError("--device %s: no such device" % dev)
                self.backings[fsname or "*"] = DeviceBacking(dev)
            if "*" not in self.backings:
                self.backings["*"] = list(self.backings.values())[0]
        else:
            image = os.path.join(a.workdir, "disk-%dM.img" % (self.prof["image_size"] >> 20))
            self.backings = {"*": ImageBacking(image, self.prof["image_size"], a.loop_dio == "on")}

        # the jobs' files must fit (with room to spare) on the image or on every device
        needed = self.prof["clone_size"] * 3 + self.prof["seq_size"] + self.prof["tree_bytes"] * 2
        for b in set(self.backings.values()):
            have = b.size if isinstance(b, ImageBacking) else int(
                run(["blockdev", "--getsize64", b.dev], timeout=30)[1])
            if needed > have * 0.8:
                raise BenchError("%s (%s) is too small for the %s sizes: needs about %s" % (
                    b.path, fmt_size(have), a.mode, fmt_size(int(needed / 0.8))))

        need = 1 << 30
        img = self.backings["*"]
        if isinstance(img, ImageBacking) and (a.fresh_image or not img.prepared()):
            need += img.size
        if "untar" in jobs:
            tar_path = os.path.join(a.workdir, "tree-v%d-%dfiles-%dMB.tar" % (
                tree.VERSION, self.prof["tree_files"], self.prof["tree_bytes"] // 1000000))
            if not os.path.exists(tar_path):
                need += int(self.prof["tree_bytes"] * 1.1)
        st = os.statvfs(a.workdir)
        free = st.f_bavail * st.f_frsize
        if free < need:
            raise BenchError("%s has %s free, the run needs %s (image file, tarball, 1 GiB margin)" % (
                a.workdir, fmt_size(free), fmt_size(need)))

        # results folder
        if a.out:
            self.out = os.path.abspath(a.out)
        elif a.mode == "smoke":
            self.out = os.path.join(a.workdir, "smoke-results")
            shutil.rmtree(self.out, ignore_errors=True)
        else:
            base = os.path.join(BENCH_DIR, "results", "%s-%s-%s" % (
                datetime.date.today().isoformat(), socket.gethostname().split(".")[0], a.mode))
            self.out, n = base, 2
            while os.path.exists(self.out):
                self.out, n = "%s-%d" % (base, n), n + 1
        os.makedirs(os.path.join(self.out, "logs"), exist_ok=True)
        set_log_file(os.path.join(self.out, "logs", "run.log"))
        log("dhfs bench, %s mode, %d repetition(s), results in %s" % (a.mode, self.repeat, self.out))

        if isinstance(img, ImageBacking):
            if a.fresh_image and os.path.exists(img.path):
                os.unlink(img.path)
            if not img.prepared():
                log("filling the %s image file %s once%s" % (fmt_size(img.size), img.path,
                    "" if a.mode == "smoke" and not a.keep_image else " (kept for later runs)"))
                img.prepare(timeout=3600)
        self.tree = None
        self.tree_meta = None
        if "untar" in jobs:
            log("small-files tree: %s files, %d MB (generated once, cached in %s)" % (
                self.prof["tree_files"], self.prof["tree_bytes"] // 1000000, a.workdir))
            self.tree = tree.ensure_tarball(a.workdir, self.prof["tree_files"], self.prof["tree_bytes"])
            self.tree_meta = self.tree[1]
        self.machine = report.machine(a.workdir, img, REPO)
        for fs in self.filesystems:
            if fs.name not in self.status:
                self.machine["version " + fs.name] = fs.version()
        if "dhfs" in self.columns:
            self.machine["dhfs binaries"] = [fs for fs in self.filesystems if fs.name == "dhfs"][0].version()
        self.save()

        runnable = [fs for fs in self.filesystems if fs.name not in self.status]
        for fs in runnable:
            if fs.name == "dhfs":
                fs.snapshot(os.path.join(a.workdir, "dhfs-bin"))
        load.note_start_load(self.machine, log)
        per_rep_jobs = [j for j in jobs if j != "million"]
        for rep in range(self.repeat):
            if "raw" in self.columns:
                self.run_raw(rep, per_rep_jobs)
            k = rep % max(1, len(runnable))  # rotate the order so drift spreads over all
            for fs in runnable[k:] + runnable[:k]:
                self.run_fs(fs, rep, per_rep_jobs)
        if "million" in jobs:
            for fs in runnable:
                self.run_fs(fs, 0, ["million"])
        if isinstance(img, ImageBacking) and a.mode == "smoke" and not a.keep_image:
            for p in (img.path, img.path + ".filled"):
                if os.path.exists(p):
                    os.unlink(p)


def load_summary(r):
    """Lines saying how busy the machine was with other work while jobs ran."""
    if not r.load:
        return []
    total = sum(x["seconds"] for x in r.load)
    mean = sum(x["foreign_cores"] * x["seconds"] for x in r.load) / total if total else 0
    worst = max(r.load, key=lambda x: x["foreign_cores"])
    names = {}
    for x in r.load:
        for n in x["busiest"]:
            names[n] = names.get(n, 0) + x["seconds"]
    busiest = ", ".join(n for n, _ in sorted(names.items(), key=lambda kv: -kv[1])[:4]) or "nothing"
    disturbed = sum(1 for x in r.load if x["foreign_cores"] >= 0.25)
    text = ("Other load while jobs ran (CPU used by processes outside this run, out of %d cores): "
            "mean %.2f cores, worst %.2f (%s %s rep %d); busiest: %s." % (
                os.cpu_count(), mean, worst["foreign_cores"], worst["fs"], worst["job"], worst["rep"], busiest))
    if disturbed:
        text = ("**WARNING: %d of %d job runs shared the machine with other work (>= 0.25 cores); "
                "their figures are disturbed (per-job figures in results.json, foreign_load).** " % (
                    disturbed, len(r.load))) + text
    return [text]


def write_report(r, interrupted):
    med = report.medians(r.results)
    failed_cells = set()
    for f in r.failures:
        for m in BY_ID.values():
            if m.job == f["job"]:
                failed_cells.add((m.id, f["fs"]))
    columns = [c for c in r.columns if c in r.results or c in r.status or any(f["fs"] == c for f in r.failures)]
    main_table = report.results_table(columns, med, r.status, r.prof, failed_cells)
    peers = [p for p in report.PEERS + ["raw"] if p in columns]
    ratios = report.ratio_table(peers, med, r.prof)
    tgts = (report.targets(med, r.prof, r.jobs, report.fuse_floors(r.fuse, r.fuse_rt))
            if "dhfs" in med else None)
    chart_list = report.charts(r.out, columns, med, r.prof)

    p = r.prof
    lines = ["# dhfs benchmark: %s mode, %s" % (p["mode"], r.started), ""]
    if interrupted:
        lines += ["**INCOMPLETE: the run was interrupted; figures below cover what finished.**", ""]
    lines += ["Command: `%s`  " % r.command,
              "Medians of %d repetition(s). Storage: %s. Every filesystem was formatted afresh "
              "for every repetition. Caches dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) "
              "before every job. Buffered I/O (direct=0) for every filesystem. MB/s = 10^6 bytes/s. "
              "See bench/README.md for what each job does." % (r.repeat, r.storage()), "",
              "Sizes: %s." % ", ".join("%s=%s" % (k, fmt_size(v) if k in config.SIZE_FIELDS else v)
                                         for k, v in sorted(p.items()) if k not in ("mode", "jobs_default")),
              ""] + load_summary(r) + ["", "## Results", "", main_table, ""]
    if "dhfs" in r.status:
        lines += ["dhfs: %s." % "; ".join(n for n in r.notes if n.startswith("dhfs")), ""]
    lines += ["## dhfs relative to each peer", ""]
    if ratios:
        lines += ["Ratios are oriented so that **> 1 means dhfs is better** (dhfs/peer for "
                  "throughput and IOPS, peer/dhfs for times and space).", "", ratios, ""]
    else:
        lines += ["No dhfs figures in this run (%s), so no ratios." % r.status.get("dhfs", "dhfs not selected"), ""]
    lines += ["## Targets (issues 7 and 3)", ""]
    if tgts:
        if p["mode"] != "full":
            lines += ["The issues state these targets for the full-mode sizes; with %s-mode sizes "
                      "they are indicative only." % p["mode"], ""]
        lines += [report.targets_table(tgts), ""]
    else:
        lines += ["Not evaluated: no dhfs figures in this run.", ""]
    lines += report.fuse_section(r.fuse, r.fuse_rt, med, r.prof)
    if r.failures:
        lines += ["## Failures", "", "| filesystem | rep | job | error |", "| --- | --- | --- | --- |"]
        lines += ["| %s | %d | %s | %s |" % (f["fs"], f["rep"], f["job"], f["error"].replace("|", "/"))
                  for f in r.failures] + [""]
    lines += ["## Charts", ""]
    if isinstance(chart_list, str):
        lines += [chart_list, ""]
    else:
        for png, title in chart_list:
            lines += ["![%s](%s)" % (title, os.path.relpath(png, r.out)) if png else "- " + title, ""]
    lines += ["## Every repetition", "", "| job | filesystem | values (in run order) |", "| --- | --- | --- |"]
    for m in BY_ID.values():
        for c in columns:
            vals = r.results.get(c, {}).get(m.id)
            if vals:
                lines.append("| %s (%s) | %s | %s |" % (m.label(p), m.unit, TITLES[c],
                                                       ", ".join(fmt_value(v, m.unit) for v in vals)))
    r.machine["storage"] = r.storage()
    lines += ["", "## Machine", ""]
    for k, v in r.machine.items():
        lines.append("- **%s**: %s" % (k, v))
    if r.tree_meta:
        t = r.tree_meta
        lines.append("- **small-files tree**: %d files, %d symlinks, %d directories, %d bytes of file "
                     "data, tarball sha256 %s" % (t["files"], t["symlinks"], t["dirs"], t["regular_bytes"],
                                                  t["sha256"][:16]))
    lines += ["", "Raw fio JSON: `raw/<filesystem>/rep<N>/<job>.json`; logs: `logs/`; all figures: "
              "`results.json`.", ""]
    with open(os.path.join(r.out, "report.md"), "w") as f:
        f.write("\n".join(lines))

    # stdout: the tables
    print()
    print("Results (medians of %d, %s mode):" % (r.repeat, p["mode"]))
    print(main_table)
    print()
    if ratios:
        print("dhfs relative to each peer (> 1 means dhfs is better):")
        print(ratios)
    else:
        print("dhfs relative to each peer: no dhfs figures (%s)." % r.status.get("dhfs", "not selected"))
    if tgts:
        print()
        print(report.targets_table(tgts))
    print()
    for line in load_summary(r):
        print(line.replace("**", ""))
    if r.failures:
        print("%d failure(s):" % len(r.failures))
        for f in r.failures:
            print("  %s rep %d %s: %s" % (f["fs"], f["rep"], f["job"], f["error"]))
    print("Report: %s" % os.path.join(r.out, "report.md"))


class Stored:
    """An earlier run, read back from its results.json (for --report)."""

    def __init__(self, out):
        with open(os.path.join(out, "results.json")) as f:
            d = json.load(f)
        self.out = os.path.abspath(out)
        self.prof, self.columns, self.results = d["profile"], d["columns"], d["results"]
        self.status, self.failures, self.notes = d["status"], d["failures"], d["notes"]
        self.command, self.started, self.machine = d["command"], d["started"], d["machine"]
        self.tree_meta, self.load = d.get("tree"), d.get("foreign_load", [])
        self.jobs = d.get("jobs") or sorted({m.split(".")[0] for per in self.results.values() for m in per})
        self.finished = d.get("finished", True)
        self.repeat = d.get("repeat") or max([len(v) for per in self.results.values() for v in per.values()] or [0])
        self._storage = d.get("storage") or d["machine"].get("storage", "?")
        self.fuse, self.fuse_rt = d.get("fuse_requests", {}), d.get("fuse_round_trip_us", [])

    def storage(self):
        return self._storage


def main(argv):
    args = parse_args(argv)
    if args.report:
        try:
            stored = Stored(args.report)
        except (OSError, ValueError, KeyError) as e:
            print("run.py: %s: cannot read results.json: %s" % (args.report, e), file=sys.stderr)
            return 2
        write_report(stored, interrupted=not stored.finished)
        return 0
    if os.geteuid() != 0:
        print("run.py: must run as root (loop devices, mounts, drop_caches)", file=sys.stderr)
        return 2

    def finish(r, interrupted):
        r.save()
        write_report(r, interrupted)
    return run_guarded(Run(args), "run.py", lambda r: getattr(r, "machine", None) is not None, finish)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
