#!/usr/bin/python3
"""Dedup benchmark (issue 4, item 6): a realistic set of image layers (a debootstrap
Debian base, images built separately on it with overlapping package sets, application
layers in several versions), extracted layer by layer into docker's overlay2 layout on
ext4 and on dhfs. Reports the space each uses, the logical bytes, the unique-content limit
of file-level dedup (sha256 of every file), dhfs's dedup ratio and the extraction times.
See bench/README.md, "Dedup benchmark".

    sudo bench/dedup_bench.py             # full set (debootstrap once, cached), 3 repetitions
    sudo bench/dedup_bench.py --smoke     # tiny synthetic set, < 1 min, no network (CI)
"""

import argparse
import datetime
import json
import os
import shutil
import sys
import time
import traceback

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

from benchlib import fuse_cost, layers, load, report  # noqa: E402
from benchlib.filesystems import Dhfs, Ext4, ImageBacking  # noqa: E402
from benchlib.guarded import run_guarded  # noqa: E402
from benchlib.resources import claim_workdir  # noqa: E402
from benchlib.util import (BenchError, drop_caches, fmt_size,  # noqa: E402
                           log, log_quiet, median, parse_size, run, set_log_file, statfs_used, which)

REPO = os.path.dirname(BENCH_DIR)
MiB = float(1 << 20)
DATA_TARGET = 1.05   # dhfs data space <= 1.05x the unique-content limit
TIME_TARGET = 2.0    # extraction time <= 2x ext4's


def default_bin():
    for d in ("build/tools", "build/release/tools"):
        p = os.path.join(REPO, d)
        if os.path.exists(os.path.join(p, "dhfs")):
            return p
    return os.path.join(REPO, "build", "tools")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/dedup_bench.py",
                                description="Dedup benchmark: image layers on ext4 and dhfs (run as root).")
    p.add_argument("--smoke", action="store_true",
                   help="tiny synthetic layer set (no debootstrap, no network), 1 repetition: CI")
    p.add_argument("--workdir", default="/var/tmp/dhfs-dedup-bench",
                   help="layer tarballs (layers/), image file, mount points (default /var/tmp/dhfs-dedup-bench)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the layer tarballs even if cached")
    p.add_argument("--mirror", help="Debian mirror for debootstrap and apt (default: the one apt is "
                   "configured with in /etc/apt/sources.list[.d])")
    p.add_argument("--repeat", type=int, help="repetitions, medians reported (default 3; smoke 1)")
    p.add_argument("--size", help="size of the image file each filesystem is made on "
                   "(default: 2x the logical bytes + 512 MiB, at least 1 GiB)")
    p.add_argument("--out", help="results folder (default bench/results/<date>-dedup; "
                   "smoke: <workdir>/smoke-results)")
    p.add_argument("--dhfs-bin", default=default_bin(),
                   help="directory with mkfs.dhfs, dhfs and dhfsctl (default build/tools)")
    p.add_argument("--dhfs-mkfs-opts", default="", help="extra mkfs.dhfs arguments (space-separated)")
    p.add_argument("--dhfs-mount-opts", default="", help="extra dhfs -o options (comma-separated)")
    p.add_argument("--require-dhfs", action="store_true", help="fail if the dhfs binaries are missing")
    p.add_argument("--keep-image", action="store_true", help="keep the image file after a smoke run")
    return p.parse_args(argv)


class DedupRun:
    def __init__(self, args):
        self.args = args
        self.results = {}       # fs -> figure -> [values]
        self.reps = []          # every repetition, raw
        self.failures = []
        self.notes = []
        self.status = {}
        self.set = None
        self.layer_meta = {}
        self.machine = None

    # ------------------------------------------------------------------ helpers
    def record(self, fs, values):
        per = self.results.setdefault(fs, {})
        for k, v in values.items():
            per.setdefault(k, []).append(v)

    def save(self):
        data = {"command": self.command, "started": self.started, "repeat": self.repeat,
                "smoke": self.args.smoke, "set": self.set, "layer_build": self.layer_meta,
                "results": self.results, "repetitions": self.reps, "failures": self.failures,
                "notes": self.notes, "status": self.status, "machine": self.machine,
                "image_size": self.image_size, "targets": getattr(self, "targets", None),
                "finished": getattr(self, "finished", False)}
        tmp = os.path.join(self.out, "results.json.tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, os.path.join(self.out, "results.json"))

    def dhfsctl(self, *argv):
        _, out, _ = run([self.ctl] + list(argv), timeout=600)
        return out

    def df(self, mnt):
        return json.loads(self.dhfsctl("--json", "df", mnt))

    def warm(self):
        """Read every tarball once, so that extraction measures the filesystem under test
        and not the disk under the workdir (the same for both)."""
        for n in self.names:
            with open(os.path.join(self.layer_dir, n + ".tar"), "rb") as f:
                while f.read(1 << 22):
                    pass

    def logical_on(self, root):
        """Sum of regular file sizes under root, each inode once (checks the extraction)."""
        seen, total, files = set(), 0, 0
        for dirpath, dirnames, filenames in os.walk(root):
            for n in filenames:
                st = os.lstat(os.path.join(dirpath, n))
                if (st.st_mode & 0o170000) == 0o100000 and st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_size
                    files += 1
        return total, files

    # ------------------------------------------------------------------ one filesystem
    def run_fs(self, fs, rep):
        log("rep %d/%d  %s" % (rep + 1, self.repeat, fs.name))
        mark = self.res.mark()
        mnt = self.mnt
        proc = None
        values = {}
        try:
            dev = self.backing.attach(self.res)
            fs.format(dev)
            fs.mount(dev, mnt, self.res, os.path.join(self.out, "logs", "%s-rep%d.log" % (fs.name, rep + 1)))
            proc = fs.proc
            df0 = self.df(mnt) if fs.name == "dhfs" else None
            counter = fuse_cost.RequestCounter(self.ctl, mnt) if fs.name == "dhfs" else None
            round_trip = fuse_cost.round_trip_us(mnt, self.args.workdir) if counter else None
            drop_caches()
            self.warm()
            used0 = statfs_used(mnt)
            rq0 = counter.snapshot() if counter else None
            t0 = time.perf_counter()
            for layer in self.set["layers"]:
                d = os.path.join(mnt, "overlay2", layer["id"], "diff")
                os.makedirs(d)
                run(["tar", "-C", d, "--numeric-owner", "-xpf",
                     os.path.join(self.layer_dir, layer["name"] + ".tar")], timeout=3600)
            t1 = time.perf_counter()
            rq1 = counter.snapshot() if counter else None
            if fs.name == "dhfs":
                self.dhfsctl("sync", mnt)  # the kernel does not forward sync(1) to FUSE
            else:
                run(["sync", "-f", mnt], timeout=3600)
            t2 = time.perf_counter()
            fs.check_alive()
            used1 = statfs_used(mnt)
            values = {"extract_s": t1 - t0, "total_s": t2 - t0, "sync_s": t2 - t1,
                      "used_bytes": used1 - used0, "used_before_bytes": used0, "used_after_bytes": used1}
            if fs.name == "dhfs":
                df1 = self.df(mnt)
                log_quiet("dhfsctl --json df before: %s" % json.dumps(df0))
                log_quiet("dhfsctl --json df after:  %s" % json.dumps(df1))
                values.update({"df_" + k: v for k, v in df1.items() if isinstance(v, (int, float))})
                values["data_bytes"] = df1["physical_bytes"] - df0["physical_bytes"]
                values["metadata_delta_bytes"] = df1["metadata_bytes"] - df0["metadata_bytes"]
                # What the daemon answered during tar -x, its own time for it, and what the
                # requests tar waited for cost in round trips alone (see fuse_cost).
                rq = counter.difference(rq0, rq1)
                if rq is None:
                    raise BenchError("dhfsctl requests gave no counts around the extraction")
                values["fuse_requests"] = rq["count"]
                values["daemon_request_s"] = rq["daemon_s"]
                values["waited_requests"] = fuse_cost.waited_requests(rq["kinds"])
                values["round_trip_us"] = round_trip
                values["fuse_floor_s"] = values["waited_requests"] * round_trip / 1e6
                log_quiet("FUSE requests during tar -x, by kind: %s" % json.dumps(rq["kinds"]))
            # check: every file arrived with its size (not timed)
            logical, files = self.logical_on(os.path.join(mnt, "overlay2"))
            values["walk_logical_bytes"] = logical
            values["walk_files"] = files
            if logical != self.set["logical_bytes"]:
                raise BenchError("extraction on %s holds %d bytes of files, the layers %d" % (
                    fs.name, logical, self.set["logical_bytes"]))
            self.record(fs.name, values)
            self.reps.append({"fs": fs.name, "rep": rep + 1, **values})
            shown = "tar -x %.2f s + sync %.2f s, %.1f MiB used" % (values["extract_s"], values["sync_s"],
                                                                     values["used_bytes"] / MiB)
            if fs.name == "dhfs":
                shown += ", data %.1f MiB, metadata %.1f MiB, logical %.1f MiB, dedup ratio %.3f" % (
                    values["data_bytes"] / MiB, values["df_metadata_bytes"] / MiB,
                    values["df_logical_bytes"] / MiB, values["df_dedup_ratio"])
            log("  %-5s %s" % (fs.name, shown))
        except BenchError as e:
            self.failures.append({"fs": fs.name, "rep": rep + 1, "error": str(e)})
            log("  %s FAILED: %s" % (fs.name, e))
        except Exception as e:  # a bug in the benchmark: say so, keep the cleanup
            log_quiet(traceback.format_exc())
            self.failures.append({"fs": fs.name, "rep": rep + 1,
                                  "error": "internal error: %s: %s" % (type(e).__name__, e)})
            log("  %s FAILED: internal error: %s: %s" % (fs.name, type(e).__name__, e))
        finally:
            self.res.unwind(mark)
            fs.proc = None
        if proc is not None and proc.returncode not in (0, None):
            self.failures.append({"fs": fs.name, "rep": rep + 1,
                                  "error": "daemon exited with status %d after unmount" % proc.returncode})
        self.save()

    # ------------------------------------------------------------------ main
    def main(self):
        a = self.args
        self.repeat = a.repeat or (1 if a.smoke else 3)
        self.command = " ".join([os.path.relpath(sys.argv[0], REPO) if sys.argv[0] else "bench/dedup_bench.py"]
                                + sys.argv[1:])
        self.started = datetime.datetime.now().isoformat(timespec="seconds")
        self.image_size = None
        missing = [t for t in ("fio", "losetup", "tar", "mount", "umount", "mkfs.ext4") if not which(t)]
        if not a.smoke:
            missing += [t for t in ("debootstrap", "chroot") if not which(t)]
        if missing:
            raise BenchError("missing tools: %s (apt-get install fio e2fsprogs util-linux tar%s)" % (
                ", ".join(missing), "" if a.smoke else " debootstrap"))
        settings = {"dhfs_bin": os.path.realpath(a.dhfs_bin), "dhfs_mkfs_opts": a.dhfs_mkfs_opts.split(),
                    "dhfs_mount_opts": [o for o in a.dhfs_mount_opts.split(",") if o]}
        self.filesystems = [Ext4(settings), Dhfs(settings)]
        dhfs = self.filesystems[1]
        why = dhfs.available()
        self.ctl = os.path.join(settings["dhfs_bin"], "dhfsctl")
        if not why and not os.access(self.ctl, os.X_OK):
            why = "not built (no dhfsctl in %s)" % settings["dhfs_bin"]
        if why:
            if a.require_dhfs:
                raise BenchError("dhfs %s (--require-dhfs)" % why)
            self.status["dhfs"] = "not built"
            self.notes.append("dhfs %s" % why)
            log("dhfs: %s; ext4 only" % why)
            self.filesystems = self.filesystems[:1]
        os.makedirs(a.workdir, exist_ok=True)
        self.lock, self.res = claim_workdir(a.workdir, "dedup benchmark")

        # 1. the layer set (cached)
        if a.smoke:
            self.layer_dir = os.path.join(a.workdir, "smoke-layers")
            self.names = layers.build_smoke(self.layer_dir, a.rebuild)
        else:
            self.layer_dir = os.path.join(a.workdir, "layers")
            mirror = a.mirror or layers.configured_mirror()
            if not mirror:
                raise BenchError("no Debian mirror configured in /etc/apt/sources.list[.d] (use --mirror URL)")
            self.names, self.layer_meta = layers.build_debian(self.layer_dir, self.res, a.rebuild,
                                                              mirror.rstrip("/"))
        # 2. what the set holds
        log("hashing every file of %d layers" % len(self.names))
        self.set = layers.measure(self.layer_dir, self.names)
        s = self.set
        log("set: %d layers, %d files, logical %s, unique contents %s (%d distinct), "
            "file-level dedup limit %.2fx" % (len(s["layers"]), s["files"], fmt_size(s["logical_bytes"]),
                                              fmt_size(s["unique_bytes"]), s["distinct_contents"],
                                              s["logical_bytes"] / float(max(1, s["unique_bytes"]))))
        # 3. the image every filesystem is made on, the same size for both
        if a.size:
            size = parse_size(a.size)
        else:
            size = max(1 << 30, 2 * s["logical_bytes"] + (512 << 20))
        size = (size + (256 << 20) - 1) // (256 << 20) * (256 << 20)
        self.image_size = size
        need = size + (512 << 20)
        image = os.path.join(a.workdir, "disk-%dM.img" % (size >> 20))
        self.backing = ImageBacking(image, size)
        if not self.backing.prepared():
            st = os.statvfs(a.workdir)
            if st.f_bavail * st.f_frsize < need:
                raise BenchError("%s has %s free, the image file needs %s" % (
                    a.workdir, fmt_size(st.f_bavail * st.f_frsize), fmt_size(need)))
        if a.out:
            self.out = os.path.abspath(a.out)
        elif a.smoke:
            self.out = os.path.join(a.workdir, "smoke-results")
            shutil.rmtree(self.out, ignore_errors=True)
        else:
            base = os.path.join(BENCH_DIR, "results", "%s-dedup" % datetime.date.today().isoformat())
            self.out, n = base, 2
            while os.path.exists(self.out):
                self.out, n = "%s-%d" % (base, n), n + 1
        os.makedirs(os.path.join(self.out, "logs"), exist_ok=True)
        set_log_file(os.path.join(self.out, "logs", "run.log"))
        log("dedup benchmark%s, %d repetition(s), results in %s" % (
            " (smoke)" if a.smoke else "", self.repeat, self.out))
        if not self.backing.prepared():
            log("filling the %s image file %s once" % (fmt_size(size), image))
            self.backing.prepare(timeout=3600)
        self.mnt = os.path.join(a.workdir, "mnt")
        os.makedirs(self.mnt, exist_ok=True)
        self.machine = report.machine(a.workdir, self.backing, REPO)
        for fs in self.filesystems:
            self.machine["version " + fs.name] = fs.version()
        if len(self.filesystems) > 1:
            dhfs.snapshot(os.path.join(a.workdir, "dhfs-bin"))
            ctl_copy = os.path.join(a.workdir, "dhfs-bin", "dhfsctl")
            shutil.copy2(self.ctl, ctl_copy)
            self.ctl = ctl_copy
        load.note_start_load(self.machine, log)
        self.save()
        # 4. every repetition: each filesystem freshly made, order rotated
        for rep in range(self.repeat):
            k = rep % len(self.filesystems)
            for fs in self.filesystems[k:] + self.filesystems[:k]:
                sample = load.Sample()
                self.run_fs(fs, rep)
                foreign, busiest = load.measure(sample)
                if foreign >= 0.25:
                    note = "rep %d %s: other processes used %.1f cores (%s)" % (
                        rep + 1, fs.name, foreign, ", ".join(busiest))
                    self.notes.append(note)
                    log("  note: " + note)
        if a.smoke and not a.keep_image:
            for p in (image, image + ".filled"):
                if os.path.exists(p):
                    os.unlink(p)


# ---------------------------------------------------------------------------- report

def tables(r):
    s = r.set
    med = {fs: {k: median(v) for k, v in per.items()} for fs, per in r.results.items()}
    e, d = med.get("ext4", {}), med.get("dhfs", {})
    uniq, logical = float(s["unique_bytes"]), float(s["logical_bytes"])

    def mib(v):
        return "—" if v is None else "%.1f" % (v / MiB)

    def sec(v):
        return "—" if v is None else "%.2f" % v

    def dh(v):
        return r.status.get("dhfs") or v

    set_rows = [
        ["layers", str(len(s["layers"]))],
        ["regular files (all layers)", str(s["files"])],
        ["entries (files, dirs, symlinks, hard links)", str(s["entries"])],
        ["logical bytes (sum of file sizes)", "%.1f MiB" % (logical / MiB)],
        ["unique-content limit (sum of distinct contents, sha256)", "%.1f MiB" % (uniq / MiB)],
        ["same, each content rounded up to 4 KiB blocks", "%.1f MiB" % (s["unique_bytes_4k"] / MiB)],
        ["distinct contents", str(s["distinct_contents"])],
        ["file-level dedup limit (logical / unique)", "%.2fx" % (logical / max(1.0, uniq))],
    ]
    ratio_time = (d["total_s"] / e["total_s"]) if d.get("total_s") and e.get("total_s") else None
    rows = [
        ["extraction: tar -x of every layer + sync (s)", sec(e.get("total_s")), dh(sec(d.get("total_s")))],
        ["  of which tar -x (s)", sec(e.get("extract_s")), dh(sec(d.get("extract_s")))],
        ["  of which sync (s)", sec(e.get("sync_s")), dh(sec(d.get("sync_s")))],
        ["extraction time dhfs / ext4", "", dh("—" if ratio_time is None else "%.2fx" % ratio_time)],
        ["FUSE requests dhfs answered during tar -x", "—", dh("—" if d.get("fuse_requests") is None
                                                              else "%d" % d["fuse_requests"])],
        ["  per regular file", "—", dh("—" if not d.get("fuse_requests") or not d.get("walk_files")
                                        else "%.1f" % (d["fuse_requests"] / d["walk_files"]))],
        ["  the daemon's own time for them, summed over threads (s)", "—",
         dh(sec(d.get("daemon_request_s")))],
        ["  those tar waited for (all but %s)" % ", ".join(sorted(fuse_cost.BACKGROUND_KINDS)), "—",
         dh("—" if d.get("waited_requests") is None else "%d" % d["waited_requests"])],
        ["one FUSE round trip, a getxattr answered at once (us)", "—",
         dh("—" if d.get("round_trip_us") is None else "%.1f" % d["round_trip_us"])],
        ["  the waited-for requests in round trips alone (s): a floor under tar -x", "—",
         dh(sec(d.get("fuse_floor_s")))],
        ["space used, statvfs after - before (MiB)", mib(e.get("used_bytes")), dh(mib(d.get("used_bytes")))],
        ["  space used / unique limit", "—" if e.get("used_bytes") is None else "%.2fx" % (e["used_bytes"] / uniq),
         dh("—" if d.get("used_bytes") is None else "%.2fx" % (d["used_bytes"] / uniq))],
        ["data space: dhfsctl df physical (MiB)", "—", dh(mib(d.get("data_bytes")))],
        ["  data space / unique limit", "—",
         dh("—" if d.get("data_bytes") is None else "%.3fx" % (d["data_bytes"] / uniq))],
        ["  data space / unique limit in 4 KiB blocks", "—",
         dh("—" if d.get("data_bytes") is None else "%.3fx" % (d["data_bytes"] / float(s["unique_bytes_4k"])))],
        ["metadata: dhfsctl df metadata, after (MiB)", "—", dh(mib(d.get("df_metadata_bytes")))],
        ["  of which added by the extraction (MiB)", "—", dh(mib(d.get("metadata_delta_bytes")))],
        ["shared data: dhfsctl df shared (MiB)", "—", dh(mib(d.get("df_shared_bytes")))],
        ["logical bytes reported (MiB)", mib(e.get("walk_logical_bytes")), dh(mib(d.get("df_logical_bytes")))],
        ["dedup ratio (logical / physical data)", "1.00 (none)",
         dh("—" if d.get("df_dedup_ratio") is None else "%.3f" % d["df_dedup_ratio"])],
    ]
    main = report.table(["figure (median of %d)" % r.repeat, "ext4", "dhfs"], rows)
    tg = []
    if d.get("data_bytes") is not None:
        v = d["data_bytes"] / uniq
        tg.append(["dhfs data space <= %.2fx the unique-content limit" % DATA_TARGET,
                   "%.1f MiB (%.3fx)" % (d["data_bytes"] / MiB, v), "%.1f MiB" % (uniq / MiB),
                   "PASS" if v <= DATA_TARGET else "FAIL"])
    else:
        tg.append(["dhfs data space <= %.2fx the unique-content limit" % DATA_TARGET, "—",
                   "%.1f MiB" % (uniq / MiB), "not measured"])
    if ratio_time is not None:
        status, note = ("PASS" if ratio_time <= TIME_TARGET else "FAIL"), ""
        floor = d.get("fuse_floor_s")
        if status == "FAIL" and floor is not None:
            note = "; FUSE round trips alone: %.2f s" % floor
            if floor > TIME_TARGET * e["total_s"]:
                status = "FAIL (below the FUSE floor)"
        tg.append(["extraction time <= %.1fx ext4's" % TIME_TARGET, "%.2f s (%.2fx)" % (d["total_s"], ratio_time),
                   "ext4 %.2f s%s" % (e["total_s"], note), status])
    else:
        tg.append(["extraction time <= %.1fx ext4's" % TIME_TARGET, "—", sec(e.get("total_s")), "not measured"])
    r.targets = [dict(zip(("target", "dhfs", "reference", "status"), t)) for t in tg]
    targets = report.table(["target (issue 4)", "dhfs", "reference (same run)", "status"], tg)
    return report.table(["layer set", ""], set_rows), main, targets


def write_report(r, interrupted):
    set_t, main_t, tgt_t = tables(r)
    if r.machine is not None and getattr(r, "backing", None) is not None:
        r.machine["storage"] = "image file %s (%s), loop device with direct I/O %s" % (
            r.backing.path, fmt_size(r.backing.size), {True: "on", False: "off", None: "?"}[r.backing.actual_dio])
    lines = ["# dhfs dedup benchmark%s, %s" % (" (smoke)" if r.args.smoke else "", r.started), ""]
    if interrupted:
        lines += ["**INCOMPLETE: the run was interrupted or failed; figures cover what finished.**", ""]
    lines += ["Command: `%s`  " % r.command,
              "Every layer tarball extracted with `tar --numeric-owner -xpf` (as root) into its own "
              "`overlay2/<layer id>/diff/` directory, on ext4 and on dhfs, each freshly made on a loop "
              "device over the same %s image file, for every repetition. Caches dropped before each "
              "extraction, then the tarballs read once (so they come from memory for both). The time "
              "includes the final sync (`sync -f` on ext4, `dhfsctl sync` on dhfs). Medians of %d "
              "repetition(s). MiB = 2^20 bytes." % (fmt_size(r.image_size or 0), r.repeat), ""]
    if r.args.smoke:
        lines += ["Smoke set (synthetic, tiny): the figures prove the benchmark runs, nothing more.", ""]
    lines += ["## Layer set", "", set_t, "", "## Results", "", main_t, "", "## Targets", "", tgt_t, ""]
    if r.status.get("dhfs"):
        lines += ["dhfs: %s." % "; ".join(n for n in r.notes if n.startswith("dhfs")), ""]
    lines += ["## Layers", "", "| layer | id | files | dirs | symlinks | hard links | logical MiB | tar MiB |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for l in r.set["layers"]:
        lines.append("| %s | %s… | %d | %d | %d | %d | %.1f | %.1f |" % (
            l["name"], l["id"][:12], l["files"], l["dirs"], l["symlinks"], l["hardlinks"],
            l["logical_bytes"] / MiB, l["tar_bytes"] / MiB))
    if r.layer_meta:
        lines += ["", "Built (debootstrap --variant=minbase, then `apt-get install --no-install-recommends` "
                  "in a chroot of a copy of the base per image; apt lists and caches removed as in a "
                  "Dockerfile; files deleted from the base are not stored as whiteouts; no device nodes in "
                  "layer0, as in docker's base images):", ""]
        for n, m in sorted(r.layer_meta.items()):
            lines.append("- **%s**: %s %s, built %s%s" % (
                n, m.get("mirror", "?"), m.get("suite", "?"), m.get("built", "?"),
                ", packages: %s (%d entries; %d files of the base deleted, not stored)" % (
                    " ".join(m["packages"]), m["entries"], m["deleted_not_stored"]) if "packages" in m else ""))
    if r.failures:
        lines += ["", "## Failures", "", "| filesystem | rep | error |", "| --- | --- | --- |"]
        lines += ["| %s | %d | %s |" % (f["fs"], f["rep"], f["error"].replace("|", "/")) for f in r.failures]
    if r.notes:
        lines += ["", "## Notes", ""] + ["- " + n for n in r.notes]
    lines += ["", "## Every repetition", "", "| fs | rep | tar -x s | sync s | used MiB | data MiB | "
              "metadata MiB | logical MiB (df) | dedup ratio |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for x in r.reps:
        lines.append("| %s | %d | %.2f | %.2f | %.1f | %s | %s | %s | %s |" % (
            x["fs"], x["rep"], x["extract_s"], x["sync_s"], x["used_bytes"] / MiB,
            "%.1f" % (x["data_bytes"] / MiB) if "data_bytes" in x else "—",
            "%.1f" % (x["df_metadata_bytes"] / MiB) if "df_metadata_bytes" in x else "—",
            "%.1f" % (x["df_logical_bytes"] / MiB) if "df_logical_bytes" in x else "—",
            "%.3f" % x["df_dedup_ratio"] if "df_dedup_ratio" in x else "—"))
    dreps = [x for x in r.reps if x["fs"] == "dhfs"]
    if dreps:
        keys = sorted(k for k in dreps[0] if k.startswith("df_"))
        lines += ["", "## `dhfsctl --json df` after the extraction", "",
                  "| field | " + " | ".join("rep %d" % x["rep"] for x in dreps) + " |",
                  "| --- | " + " | ".join("---:" for _ in dreps) + " |"]
        for k in keys:
            lines.append("| %s | %s |" % (k[3:], " | ".join(str(x.get(k, "—")) for x in dreps)))
    lines += ["", "## Machine", ""]
    for k, v in (r.machine or {}).items():
        lines.append("- **%s**: %s" % (k, v))
    lines += ["", "All figures (every `dhfsctl --json df` field of every repetition): `results.json`; "
              "progress and commands: `logs/run.log`; daemon output: `logs/dhfs-rep<N>.log`.", ""]
    with open(os.path.join(r.out, "report.md"), "w") as f:
        f.write("\n".join(lines))
    print()
    print(set_t)
    print()
    print(main_t)
    print()
    print(tgt_t)
    if r.failures:
        print("%d failure(s):" % len(r.failures))
        for f in r.failures:
            print("  %s rep %d: %s" % (f["fs"], f["rep"], f["error"]))
    print("Report: %s" % os.path.join(r.out, "report.md"))


def main(argv):
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("dedup_bench.py: must run as root (loop devices, mounts, chroot, drop_caches)", file=sys.stderr)
        return 2

    def finish(r, interrupted):
        write_report(r, interrupted)
        r.save()
    return run_guarded(DedupRun(args), "dedup_bench.py", lambda r: r.set is not None, finish)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
