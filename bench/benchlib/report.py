"""Tables (markdown), ratios dhfs/peer, targets from issues 3 and 7, charts, machine facts."""

import os
import platform
import socket

from .filesystems import TITLES
from .fuse_cost import BACKGROUND_KINDS, waited_requests
from .jobs import BY_ID, METRICS
from .util import fmt_value, median, read_file, run, which

PEERS = ["ext4", "xfs", "btrfs", "fuse-overlayfs"]


# ------------------------------------------------------------------------------ machine

def _cmd_line(cmd, timeout=10):
    try:
        rc, out, err = run(cmd, timeout=timeout, check=False)
    except Exception:
        return "?"
    lines = [l.strip() for l in (out + "\n" + err).splitlines()
             if l.strip() and "unknown argument" not in l]
    return lines[0] if lines else "?"


def machine(workdir, backing, repo):
    info = {}
    cpu = "?"
    for line in read_file("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    info["host"] = socket.gethostname()
    info["cpu"] = cpu
    info["cores"] = str(os.cpu_count())
    mem = [l for l in read_file("/proc/meminfo").splitlines() if l.startswith("MemTotal")]
    info["ram"] = "%.1f GiB" % (int(mem[0].split()[1]) / 1048576.0) if mem else "?"
    info["kernel"] = "%s %s" % (platform.release(), platform.version())
    info["cpu idle"] = cpu_idle()
    info["huge pages"] = huge_pages()
    osr = dict(l.split("=", 1) for l in read_file("/etc/os-release").splitlines() if "=" in l)
    info["os"] = osr.get("PRETTY_NAME", "?").strip('"')
    # the disk under the image files (or the device itself)
    src = _cmd_line(["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", workdir])
    disk = backing.path if not hasattr(backing, "size") else src.split()[0] if src != "?" else "?"
    lsblk = "?"
    if disk.startswith("/dev/"):
        lsblk = _cmd_line(["lsblk", "-d", "-n", "-o", "NAME,SIZE,ROTA,TYPE,MODEL", disk])
        parent = _cmd_line(["lsblk", "-n", "-o", "PKNAME", disk])
        if parent not in ("?", ""):
            lsblk += " (on %s)" % _cmd_line(["lsblk", "-d", "-n", "-o", "NAME,SIZE,ROTA,TYPE,MODEL",
                                             "/dev/" + parent])
        sysname = os.path.basename(os.path.realpath(disk))
        sched = read_file("/sys/block/%s/queue/scheduler" % sysname).strip()
        if sched:
            lsblk += ", scheduler: " + sched
    info["storage"] = backing.describe()
    if hasattr(backing, "size"):
        info["disk under the images"] = "%s  [%s]" % (src, lsblk)
    else:
        info["device"] = lsblk
    info["fio"] = _cmd_line(["fio", "--version"])
    info["tar"] = _cmd_line(["tar", "--version"])
    info["coreutils"] = _cmd_line(["cp", "--version"])
    info["python"] = platform.python_version()
    info["commit"] = repo_commit(repo)
    return info


def cpu_idle():
    """How idle CPUs wait: on a VM, whether an idle vCPU polls before it halts.

    A halted vCPU costs a wake-up through the host for every request whose
    reply it waits for, which doubles a FUSE round trip (bench/README.md)."""
    base = "/sys/devices/system/cpu/cpuidle/"
    driver = read_file(base + "current_driver").strip() or "?"
    text = "driver %s, governor %s" % (driver, read_file(base + "current_governor").strip() or "?")
    poll = read_file("/sys/module/haltpoll/parameters/guest_halt_poll_ns").strip()
    if poll:
        text += ", guest halt polling %s ns%s" % (poll, " (off: an idle vCPU halts at once)" if poll == "0" else "")
    return text


def huge_pages():
    """The transparent huge page settings: dhfs asks for huge pages for its FUSE buffers,
    which halves the device requests of its large reads and writes where it gets them
    (bench/README.md)."""
    def chosen(name):
        text = read_file("/sys/kernel/mm/transparent_hugepage/" + name)
        return text[text.find("[") + 1:text.find("]")] if "[" in text and "]" in text else "?"
    return "enabled %s, defrag %s" % (chosen("enabled"), chosen("defrag"))


def repo_commit(repo):
    rc, out, _ = run(["git", "-C", repo, "rev-parse", "HEAD"], timeout=10, check=False)
    commit = out.strip() if rc == 0 else "no commits yet"
    rc, out, _ = run(["git", "-C", repo, "status", "--porcelain"], timeout=30, check=False)
    if rc == 0 and out.strip():
        commit += " (+ %d uncommitted change(s))" % len(out.strip().splitlines())
    return commit


# ------------------------------------------------------------------------------- tables

def medians(results):
    """{fs: {metric: median}}"""
    return {fs: {m: median(v) for m, v in per.items()} for fs, per in results.items()}


def table(header, rows):
    """A markdown table, first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    def line(r):
        return "| " + " | ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
                                 for i, c in enumerate(r)) + " |"
    sep = "| " + " | ".join(("-" * widths[i]) if i == 0 else ("-" * (widths[i] - 1) + ":")
                            for i in range(len(header))) + " |"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def _cell(fs, mid, med, status, prof):
    if fs in status and status[fs]:
        return status[fs]
    v = med.get(fs, {}).get(mid)
    if v is None:
        return "—"
    m = BY_ID[mid]
    s = fmt_value(v, m.unit)
    if mid == "clone.clone_s":
        space = med.get(fs, {}).get("clone.space_mib")
        if space is not None and space > prof["clone_size"] / float(1 << 20) / 2:
            s += " (copy)"
    return s


def results_table(columns, med, status, prof, failed_cells):
    header = ["job"] + [TITLES[c] for c in columns]
    rows = []
    for m in METRICS:
        if not any(med.get(c, {}).get(m.id) is not None or (m.id, c) in failed_cells for c in columns):
            continue
        row = ["%s (%s)" % (m.label(prof), m.unit)]
        for c in columns:
            if (m.id, c) in failed_cells and med.get(c, {}).get(m.id) is None:
                row.append("failed")
            else:
                row.append(_cell(c, m.id, med, status, prof))
        rows.append(row)
    return table(header, rows)


def oriented_ratio(m, dhfs, peer):
    """> 1 means dhfs is better."""
    if dhfs is None or peer is None:
        return None
    if m.unit == "MiB":  # space: ratios of near-zero figures mean nothing
        if dhfs < 1 or peer < 1:
            return None
    if dhfs <= 0 or peer <= 0:
        return None
    return dhfs / peer if m.higher_is_better() else peer / dhfs


def ratio_table(peers, med, prof):
    header = ["job"] + ["vs %s" % TITLES[p] for p in peers]
    rows = []
    for m in METRICS:
        d = med.get("dhfs", {}).get(m.id)
        if d is None:
            continue
        row = [m.label(prof)]
        for p in peers:
            r = oriented_ratio(m, d, med.get(p, {}).get(m.id))
            row.append("—" if r is None else "%.2fx" % r)
        if any(c != "—" for c in row[1:]):
            rows.append(row)
    return table(header, rows) if rows else None


# ------------------------------------------------------------------------------ targets

def targets(med, prof, jobs=(), floors=None):
    """[(target, dhfs figure, reference, status)] from issue 7 (suite) and issue 3 (clone).
    floors: {metric: seconds} that dhfs's waited-for FUSE round trips alone took (fuse_floors)."""
    d = med.get("dhfs", {})
    out = []

    def val(fs, mid):
        return med.get(fs, {}).get(mid)

    def fmt(mid, v):
        return "—" if v is None else "%s %s" % (fmt_value(v, BY_ID[mid].unit), BY_ID[mid].unit)

    def ratio_target(name, mid, ref_fs, factor):
        m = BY_ID[mid]
        dv, rv = d.get(mid), val(ref_fs, mid)
        r = oriented_ratio(m, dv, rv)
        if dv is None or rv is None or r is None:
            out.append((name, fmt(mid, dv), "%s %s" % (TITLES[ref_fs], fmt(mid, rv)), "not measured"))
            return
        out.append((name, fmt(mid, dv), "%s %s (%.2fx)" % (TITLES[ref_fs], fmt(mid, rv), r),
                    "PASS" if r >= factor else "FAIL"))

    for mid in ("seqwrite.mbps", "seqread.mbps"):
        ratio_target("%s >= 0.9x ext4" % BY_ID[mid].label(prof), mid, "ext4", 0.9)
    for mid in ("randwrite1.iops", "randwrite32.iops", "randread1.iops", "randread32.iops"):
        ratio_target("%s >= 0.8x ext4" % BY_ID[mid].label(prof), mid, "ext4", 0.8)
    # never below the FUSE peer; 1.3x where the peer is under 0.8x ext4
    for m in METRICS:
        dv, fv, ev = d.get(m.id), val("fuse-overlayfs", m.id), val("ext4", m.id)
        r = oriented_ratio(m, dv, fv)
        if r is None:
            continue
        weak = oriented_ratio(m, fv, ev)  # fuse-overlayfs relative to ext4, > 1 = better
        need = 1.3 if (weak is not None and weak < 0.8) else 1.0
        raw = val("raw", m.id)
        status = "PASS" if r >= need else "FAIL"
        note = ""
        if status == "FAIL" and raw and m.higher_is_better() and dv >= 0.9 * raw and fv >= 0.9 * raw:
            status, note = "AT DEVICE LIMIT", " (raw device %s)" % fmt(m.id, raw)
        out.append(("%s >= %.1fx fuse-overlayfs" % (m.label(prof), need), fmt(m.id, dv),
                    "fuse-overlayfs %s (%.2fx)%s" % (fmt(m.id, fv), r, note), status))
    # untar
    dv, ev, fv = d.get("untar.extract_s"), val("ext4", "untar.extract_s"), val("fuse-overlayfs", "untar.extract_s")
    for ref, rv, lim in (("ext4", ev, 2.5), ("fuse-overlayfs", fv, 0.7)):
        if dv is None or rv is None:
            out.append(("untar time <= %.1fx %s's" % (lim, ref), fmt("untar.extract_s", dv),
                        "%s %s" % (ref, fmt("untar.extract_s", rv)), "not measured"))
        else:
            status, note = ("PASS" if dv <= lim * rv else "FAIL"), ""
            floor = (floors or {}).get("untar.extract_s")
            if status == "FAIL" and ref == "ext4" and floor is not None:
                note = "; FUSE round trips alone: %s s" % fmt_value(floor, "s")
                if floor > lim * rv:
                    status = "FAIL (below the FUSE floor)"
            out.append(("untar time <= %.1fx %s's" % (lim, ref), fmt("untar.extract_s", dv),
                        "%s %s (%.2fx)%s" % (ref, fmt("untar.extract_s", rv), dv / rv, note), status))
    # issue 3: clone, redirect-on-write locality, copy-up
    def absolute(name, mid, ok, ref):
        v = d.get(mid)
        out.append((name, fmt(mid, v), ref, "not measured" if v is None else ("PASS" if ok(v) else "FAIL")))

    absolute("clone under 50 ms", "clone.clone_s", lambda v: v < 0.05, "50 ms")
    v, own = d.get("clone.read_mbps"), d.get("clone.base_read_mbps")
    out.append(("clone read after overwrites >= 0.8x dhfs's unshared read", fmt("clone.read_mbps", v),
                "dhfs unshared %s" % fmt("clone.base_read_mbps", own),
                "not measured" if v is None or own is None else ("PASS" if v >= 0.8 * own else "FAIL")))
    ratio_target("clone read after overwrites >= 3x XFS", "clone.read_mbps", "xfs", 3.0)
    ratio_target("random overwrites of the clone >= 1.5x btrfs", "clone.overwrite_iops", "btrfs", 1.5)
    v, e = d.get("copyup.time_s"), val("ext4", "copyup.time_s")
    out.append(("overlay copy-up faster than ext4", fmt("copyup.time_s", v), "ext4 %s" % fmt("copyup.time_s", e),
                "not measured" if v is None or e is None else ("PASS" if v < e else "FAIL")))
    absolute("copy-up new space <= 1 MiB", "copyup.space_mib", lambda v: v <= 1.0, "1 MiB")
    if "million" in jobs and prof["million_files"] >= 1000000:
        absolute("daemon RSS <= 300 B per inode with 1M files", "million.rss_per_inode", lambda v: v <= 300,
                 "300 B/inode")
        absolute("mount of an image holding 1M files < 2 s", "million.mount_s", lambda v: v < 2.0, "2 s")
    return out


# ------------------------------------------------------------------- FUSE request costs

def _per_op(costs, key):
    """Median over repetitions of a per-operation figure of fuse_cost differences."""
    vals = [key(c) / c["ops"] for c in costs if c.get("ops")]
    return median(vals) if vals else None


def fuse_floors(fuse, rts):
    """{metric: seconds} the waited-for requests of each dhfs job took in round trips alone
    (medians over repetitions, at the median round trip)."""
    rt = median(rts) if rts else None
    if rt is None:
        return {}
    return {m: median([waited_requests(c["kinds"]) * rt / 1e6 for c in costs])
            for m, costs in fuse.items() if costs}


def _seconds_per_op(m, value):
    """What one operation of metric m costs, from its figure (None if it has no such view)."""
    if value is None or value <= 0:
        return None
    if m.unit == "IOPS":
        return 1.0 / value
    if m.unit == "MB/s":
        return (1 << 20) / 1e6 / value  # per MiB
    return None


def fuse_table(fuse, rts, med, prof):
    """Per dhfs job: its FUSE requests per operation and what they cost in round trips."""
    rt = median(rts) if rts else None
    header = ["job", "per", "requests", "waited for", "main kinds", "daemon us",
              "round trips us", "dhfs us", "ext4 us"]
    rows = []
    for m in METRICS:
        costs = [c for c in fuse.get(m.id, []) if c.get("ops")]
        if not costs:
            continue
        ops = median([c["ops"] for c in costs])
        kinds = {}
        for c in costs:
            for k, n in c["kinds"].items():
                kinds.setdefault(k, []).append(n / c["ops"])
        top = sorted(((median(v + [0] * (len(costs) - len(v))), k) for k, v in kinds.items()), reverse=True)[:4]
        waited = _per_op(costs, lambda c: waited_requests(c["kinds"]))

        def us(v):
            return "—" if v is None else ("%.0f" % v if v >= 10 else "%.1f" % v)

        def figure_per_op(fs):
            v = med.get(fs, {}).get(m.id)
            if m.unit == "s":
                return v / ops * 1e6 if v is not None and ops else None
            s = _seconds_per_op(m, v)
            return None if s is None else s * 1e6
        rows.append([m.label(prof), costs[0].get("per", "op"),
                     "%.2f" % _per_op(costs, lambda c: c["count"]),
                     "%.2f" % waited,
                     ", ".join("%s %.2g" % (k, v) for v, k in top if v > 0),
                     us(_per_op(costs, lambda c: c["daemon_s"] * 1e6)),
                     us(waited * rt if rt is not None else None),
                     us(figure_per_op("dhfs")), us(figure_per_op("ext4"))])
    return table(header, rows) if rows else None


def fuse_section(fuse, rts, med, prof):
    """The report's lines on dhfs's FUSE requests ([] if they were not counted)."""
    t = fuse_table(fuse, rts, med, prof)
    if not t:
        return []
    rt = median(rts) if rts else None
    return [
        "## Where dhfs's time goes: FUSE requests", "",
        "One FUSE request that the daemon answers at once (a getxattr, timed in a loop on a file "
        "in the mount minus the same loop outside it) took **%s us** here (median of %d "
        "repetition(s): %s). Per job, per operation (I/O, MiB, directory entry or file), medians: "
        "the requests dhfs answered during the timed part (`dhfsctl requests`), those the "
        "application waited for (all but %s, which the kernel sends in the background), the "
        "commonest kinds, the daemon's own time (summed over its threads), what the waited-for "
        "requests cost in round trips alone (a lower bound: no daemon can be faster than that "
        "on this machine and kernel), and the time per operation on dhfs and on ext4, from "
        "their figures above. See bench/README.md." % (
            "—" if rt is None else "%.1f" % rt, len(rts), ", ".join("%.1f" % x for x in rts),
            ", ".join(sorted(BACKGROUND_KINDS))), "", t, ""]


def targets_table(rows):
    return table(["target", "dhfs", "reference (same run)", "status"], [list(r) for r in rows])


# ------------------------------------------------------------------------------- charts

GROUPS = [
    ("sequential", "Sequential throughput and reads after clone (MB/s, higher is better)", False),
    ("random", "4 KiB random I/O and fsync (IOPS, higher is better)", False),
    ("smallfiles", "Many small files (seconds, lower is better)", False),
    ("bigdir", "One directory with many entries (seconds, lower is better)", False),
    ("clone", "Clone and overlay copy-up (seconds, log scale, lower is better)", True),
    ("space", "New space used by clone and copy-up (MiB, lower is better)", False),
    ("million", "1M files (seconds, lower is better)", False),
]


def charts(out_dir, columns, med, prof):
    """One PNG per group with gnuplot; returns [(png path, title)] or a reason string."""
    if not which("gnuplot"):
        return "gnuplot not installed (apt-get install gnuplot-nox): no charts"
    cdir = os.path.join(out_dir, "charts")
    os.makedirs(cdir, exist_ok=True)
    made = []
    for group, title, logscale in GROUPS:
        metrics = [m for m in METRICS if m.group == group]
        cols = [c for c in columns if any(med.get(c, {}).get(m.id) is not None for m in metrics)]
        rows = [m for m in metrics if any(med.get(c, {}).get(m.id) is not None for c in cols)]
        if not cols or not rows:
            continue
        dat = os.path.join(cdir, group + ".dat")
        with open(dat, "w") as f:
            f.write("job\t" + "\t".join(TITLES[c] for c in cols) + "\n")
            for m in rows:
                vals = []
                for c in cols:
                    v = med.get(c, {}).get(m.id)
                    if v is not None and logscale:
                        v = max(v, 1e-4)
                    if v is not None and m.unit == "MiB":
                        v = max(v, 0.0)
                    vals.append("?" if v is None else "%.6g" % v)
                f.write(m.short + "\t" + "\t".join(vals) + "\n")
        png = os.path.join(cdir, group + ".png")
        gp = os.path.join(cdir, group + ".gp")
        width = min(1400, max(700, 40 * len(rows) * (len(cols) + 1) + 250))
        with open(gp, "w") as f:
            f.write("\n".join([
                'set terminal pngcairo size %d,480 font "sans,10"' % width,
                "set output '%s'" % os.path.basename(png),
                'set title "%s" noenhanced' % title,
                "set datafile separator '\\t'",
                "set datafile missing '?'",
                "set style data histograms",
                "set style histogram clustered gap 1",
                "set style fill solid 0.85 border -1",
                "set boxwidth 0.9",
                "set grid ytics",
                "set key outside right top noenhanced",
                "set xtics noenhanced",
                ("set logscale y\nset yrange [1e-4:*]" if logscale else "set yrange [0:*]"),
                "plot for [i=2:%d] '%s' using i:xtic(1) title columnheader(i)" % (
                    len(cols) + 1, os.path.basename(dat)),
                ""]))
        rc, _, err = run(["gnuplot", os.path.basename(gp)], timeout=60, check=False, cwd=cdir)
        if rc == 0 and os.path.exists(png):
            made.append((png, title))
        else:
            made.append((None, "%s: gnuplot failed: %s" % (group, err.strip().splitlines()[-1:] or "?")))
    return made
