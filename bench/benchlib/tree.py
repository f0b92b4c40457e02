"""Deterministic "many small files" tree, packed as a tarball once and cached in the workdir.

The tree imitates a container image layer (think /usr of a distribution): a few thousand
directories of uneven size, file sizes log-normally distributed (median ~2.5 KiB, long
tail up to several MiB), about 2% empty files, 3% symlinks and 8% files that are exact
copies of other files (image layers are full of those). Content is half text-like
(compressible) and half random (binary-like). Everything derives from SHAKE-256 of fixed
seeds, so the same parameters give byte-identical tarballs on every machine and Python
version (the sha256 is recorded in the report).
"""

import hashlib
import io
import json
import math
import os
import tarfile
import time

VERSION = 1
MTIME = 1700000000

_SYL = ("lib core net gtk py data util conf sys perl share doc man icons locale include bin "
        "ssl crypto gnu kern mod font theme test src pkg dist site node go rust java ruby vim "
        "mime zone info cache x11 qt dbus udev pam krb ldap sql xml json http mail lang audio "
        "video image print boot efi fw arch tz term ncurses readline zlib bz lzma zstd gz "
        "ffi gmp mpfr isl llvm gcc cc plugin hooks tools extra common base main debug").split()
_TEXT_EXT = (".h", ".c", ".py", ".txt", ".json", ".pm", ".rb", ".js", ".conf", ".xml",
             ".html", ".md", ".sh", ".pl", ".desktop", "")
_BIN_EXT = (".so", ".gz", ".png", ".mo", ".pyc", ".a", ".o", ".ttf", ".bin", "")


class Stream:
    """Deterministic byte/uniform stream from SHAKE-256 (independent of Python's random)."""

    def __init__(self, seed):
        self.seed = seed.encode()
        self.block = 0
        self.buf = b""
        self.pos = 0

    def bytes(self, n):
        while len(self.buf) - self.pos < n:
            self.buf = self.buf[self.pos:] + hashlib.shake_256(
                self.seed + b"/%d" % self.block).digest(1 << 16)
            self.block += 1
            self.pos = 0
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def uniform(self):
        return (int.from_bytes(self.bytes(7), "little") >> 3) / float(1 << 53)

    def below(self, n):
        return min(n - 1, int(self.uniform() * n))

    def normal(self):
        u1 = max(self.uniform(), 1e-12)
        u2 = self.uniform()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def _pick(rng, seq):
    return seq[rng.below(len(seq))]


def _name(rng, ext=""):
    n = 1 + rng.below(3)
    parts = [_SYL[rng.below(len(_SYL))] for _ in range(n)]
    sep = ("", "-", "_", ".")[rng.below(4)]
    name = sep.join(parts)
    if rng.uniform() < 0.3:
        name += "%s%d" % (("-", "")[rng.below(2)], rng.below(40))
    return name + ext


def plan(nfiles, total_bytes, seed="dhfs-bench-tree"):
    """Return (dirs, entries): dirs is a list of paths ('' = root); entries are dicts."""
    rng = Stream("%s/v%d/plan" % (seed, VERSION))
    ndirs = max(1, nfiles // 11)
    dirs, depth, used = [""], [0], [set()]
    for _ in range(1, ndirs):
        p = rng.below(len(dirs))
        while depth[p] >= 8:
            p = rng.below(len(dirs))
        name = _name(rng)
        while name in used[p]:
            name += "x"
        used[p].add(name)
        dirs.append(name if not dirs[p] else dirs[p] + "/" + name)
        depth.append(depth[p] + 1)
        used.append(set())

    cap = max(64 << 10, min(16 << 20, total_bytes // 16))
    entries, regular = [], []
    for i in range(nfiles):
        d = min(ndirs - 1, int((rng.uniform() ** 2.5) * ndirs))  # a few very big directories
        u = rng.uniform()
        binary = rng.uniform() < 0.5
        name = _name(rng, _pick(rng, _BIN_EXT if binary else _TEXT_EXT))
        while name in used[d]:
            name = "x" + name
        used[d].add(name)
        path = name if not dirs[d] else dirs[d] + "/" + name
        e = {"path": path, "id": i}
        if u < 0.02:
            e.update(kind="file", size=0, binary=False)
        elif u < 0.05 and regular:
            target = entries[regular[rng.below(len(regular))]]["path"]
            e.update(kind="symlink", target=os.path.relpath(target, os.path.dirname(path) or "."))
        elif u < 0.13 and regular:
            src = entries[regular[rng.below(len(regular))]]
            e.update(kind="file", dup_of=src["id"], binary=src["binary"])
        else:
            size = math.exp(math.log(2560) + 2.0 * rng.normal())
            e.update(kind="file", raw=size, binary=binary)
            regular.append(len(entries))
        entries.append(e)

    # scale the raw sizes so that the regular bytes (copies included) hit total_bytes
    by_id = {e["id"]: e for e in entries}
    weight = {}
    for e in entries:
        if "dup_of" in e:
            weight[e["dup_of"]] = weight.get(e["dup_of"], 1) + 1
    scale = 1.0
    for _ in range(30):
        tot = 0
        for e in entries:
            if "raw" in e:
                e["size"] = max(1, min(cap, int(e["raw"] * scale)))
                tot += e["size"] * weight.get(e["id"], 1)
        if abs(tot - total_bytes) < total_bytes * 0.002:
            break
        scale *= total_bytes / float(tot)
    for e in entries:
        if "dup_of" in e:
            e["size"] = by_id[e["dup_of"]]["size"]
    return dirs, entries


def _corpus(seed):
    rng = Stream("%s/v%d/corpus" % (seed, VERSION))
    words, n = [], 0
    while n < (1 << 20) + (1 << 16):
        w = _SYL[rng.below(len(_SYL))]
        if rng.uniform() < 0.3:
            w += _SYL[rng.below(len(_SYL))]
        w += "\n" if rng.uniform() < 0.08 else " "
        words.append(w)
        n += len(w)
    return "".join(words).encode()


def _content(e, corpus, seed):
    size = e["size"]
    if size == 0:
        return b""
    if e["binary"]:
        return hashlib.shake_256(b"%s/v%d/file/%d" % (seed.encode(), VERSION, e["id"])).digest(size)
    out, off = [], (e["id"] * 7919) % (1 << 20)
    left = size
    while left > 0:
        take = min(left, len(corpus) - off)
        out.append(corpus[off:off + take])
        left -= take
        off = (off + take * 31 + 17) % (1 << 20)
    return b"".join(out)


def ensure_tarball(workdir, nfiles, total_bytes, seed="dhfs-bench-tree"):
    """Create (once) and return (path, meta) of the tree tarball in workdir."""
    base = os.path.join(workdir, "tree-v%d-%dfiles-%dMB.tar" % (VERSION, nfiles, total_bytes // 1000000))
    meta_path = base + ".json"
    if os.path.exists(base) and os.path.exists(meta_path):
        with open(meta_path) as f:
            return base, json.load(f)
    t0 = time.monotonic()
    dirs, entries = plan(nfiles, total_bytes, seed)
    corpus = _corpus(seed)
    by_id = {e["id"]: e for e in entries}
    children = {d: [] for d in dirs}
    for e in entries:
        children[os.path.dirname(e["path"])].append(e)
    subdirs = {d: [] for d in dirs}
    for d in dirs[1:]:
        subdirs[os.path.dirname(d)].append(d)

    tmp = base + ".tmp"
    stats = {"files": 0, "symlinks": 0, "dirs": len(dirs) - 1, "regular_bytes": 0}
    with tarfile.open(tmp, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def emit(d):
            if d:
                ti = tarfile.TarInfo(d)
                ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, MTIME
                tar.addfile(ti)
            for e in sorted(children[d], key=lambda x: x["path"]):
                ti = tarfile.TarInfo(e["path"])
                ti.mtime = MTIME
                if e["kind"] == "symlink":
                    ti.type, ti.mode, ti.linkname = tarfile.SYMTYPE, 0o777, e["target"]
                    tar.addfile(ti)
                    stats["symlinks"] += 1
                    continue
                src = by_id[e["dup_of"]] if "dup_of" in e else e
                data = _content(src, corpus, seed)
                ti.size, ti.mode = len(data), (0o755 if "bin" in d.split("/")[-1:] else 0o644)
                tar.addfile(ti, io.BytesIO(data))
                stats["files"] += 1
                stats["regular_bytes"] += len(data)
            for s in sorted(subdirs[d]):
                emit(s)
        emit("")
    digest = hashlib.sha256()
    with open(tmp, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    stats.update(version=VERSION, seed=seed, sha256=digest.hexdigest(),
                 tar_bytes=os.path.getsize(tmp), entries=stats["files"] + stats["symlinks"] + stats["dirs"],
                 seconds_to_generate=round(time.monotonic() - t0, 1))
    os.replace(tmp, base)
    with open(meta_path, "w") as f:
        json.dump(stats, f, indent=1)
    return base, stats
