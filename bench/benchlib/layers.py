"""The image-layer set of the dedup benchmark (bench/dedup_bench.py), cached as tarballs.

Full set, built the way docker builds images:
  layer0            a minimal Debian base made with debootstrap --variant=minbase
  img-<name>        for each image: a copy of the base, `apt-get install` of a package set
                    in a chroot, and the layer = the files that differ from the base
                    (added or changed; deletions are counted, not stored as whiteouts).
                    The images are built separately, so packages they share are installed
                    (and stored) once per image: the duplicates file-level dedup must catch.
  app-v<N>          an application (a generated directory of a few thousand files) in
                    several versions, each version a layer holding the whole app
                    directory, each changing a small fraction of the files of the previous one.

Smoke set: the same shape (a base, images made of overlapping "packages", app versions),
generated with tarfile in a second, no debootstrap, no network.

Everything generated (app files, smoke files) derives from SHAKE-256 of fixed seeds, so
it is the same on every machine. The debootstrap/apt layers depend on the mirror's state
on the day they were built (their package versions are recorded in layers.json).
"""

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import time

from .tree import Stream
from .util import BenchError, log, run

MTIME = 1700000000
SUITE = "bookworm"

# (name, packages): overlapping sets, as separate images built FROM the same base would
# install them. All with --no-install-recommends, as Dockerfiles usually do.
IMAGES = [
    ("python", ["python3"]),
    ("python-yaml", ["python3", "python3-yaml"]),
    ("python-curl", ["python3", "curl", "ca-certificates"]),
    ("perl-json", ["perl", "libjson-perl"]),
    ("curl", ["curl", "ca-certificates"]),
    ("nginx", ["nginx-light", "ca-certificates"]),
]

# app layers: files, total bytes, versions, fraction of files changed per version
APP_FULL = dict(files=3000, bytes=60 * 1000 * 1000, versions=3, change=0.05)
APP_SMOKE = dict(files=300, bytes=3 * 1000 * 1000, versions=3, change=0.1)


def layer_id(name):
    """A docker-like 64-hex layer id (deterministic, from the layer name)."""
    return hashlib.sha256(("dhfs-dedup-bench/" + name).encode()).hexdigest()


# ------------------------------------------------------------------- apt mirror

def configured_mirror():
    """The Debian mirror of this machine's apt configuration (deb822 or one-line)."""
    paths = ["/etc/apt/sources.list"]
    d = "/etc/apt/sources.list.d"
    if os.path.isdir(d):
        paths += [os.path.join(d, n) for n in sorted(os.listdir(d))
                  if n.endswith(".list") or n.endswith(".sources")]
    for p in paths:
        try:
            with open(p) as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("#"):
                continue
            words = line.split()
            urls = []
            if line.startswith("URIs:"):
                urls = words[1:]
            elif line.startswith("deb ") and len(words) >= 3:
                urls = [w for w in words[1:] if "://" in w][:1]
            for u in urls:
                if "/debian" in u and "security" not in u and "debian-ports" not in u:
                    return u.rstrip("/")
    return None


def check_mirror(mirror, suite, timeout=20):
    """One-line BenchError if the mirror's Release file for suite cannot be fetched."""
    import urllib.request
    url = "%s/dists/%s/Release" % (mirror, suite)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read(64)
    except Exception as e:
        raise BenchError("Debian mirror %s unreachable (%s: %s)" % (mirror, url, getattr(e, "reason", e)))


# ------------------------------------------------------------------------ tarballs

def _add(tar, path, data=None, mode=0o644, kind="file", target=None, mtime=MTIME):
    ti = tarfile.TarInfo(path)
    ti.mtime, ti.uid, ti.gid = mtime, 0, 0
    if kind == "dir":
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(ti)
    elif kind == "symlink":
        ti.type, ti.mode, ti.linkname = tarfile.SYMTYPE, 0o777, target
        tar.addfile(ti)
    else:
        ti.size, ti.mode = len(data), mode
        tar.addfile(ti, io.BytesIO(data))


def _write_tar(path, entries):
    """entries: [(path, kind, data|target, mode)] in order; parent dirs are added."""
    tmp = path + ".tmp"
    seen = set()
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for p, kind, payload, mode in entries:
            parts = p.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in seen:
                    seen.add(d)
                    _add(tar, d, kind="dir")
            if kind == "dir":
                if p not in seen:
                    seen.add(p)
                    _add(tar, p, kind="dir")
            elif kind == "symlink":
                _add(tar, p, kind="symlink", target=payload)
            else:
                _add(tar, p, payload, mode)
    os.replace(tmp, path)


def _blob(seed, size):
    return hashlib.shake_256(seed.encode()).digest(size) if size else b""


def _sizes(rng, n, total):
    """n log-normal sizes (median ~4 KiB, long tail) scaled to about total bytes."""
    raw = [max(0.0, 4096.0 * pow(2.718281828, 1.6 * rng.normal())) for _ in range(n)]
    scale = total / max(1.0, sum(raw))
    cap = max(64 << 10, total // 20)
    return [min(cap, int(r * scale)) for r in raw]


def app_entries(version, spec, seed="dhfs-dedup-bench/app"):
    """The whole app directory (srv/app/...) at version: each version rewrites
    spec['change'] of the files (new content, sometimes a new size) and adds a few."""
    rng = Stream(seed + "/plan")
    n = spec["files"]
    sizes = _sizes(rng, n, spec["bytes"])
    dirs = ["srv/app"] + ["srv/app/%s" % d for d in
                          ("bin", "lib", "lib/vendor", "static", "static/img", "static/js", "templates",
                           "locale", "migrations", "docs", "config", "tests")]
    where = [dirs[min(len(dirs) - 1, int(rng.uniform() ** 1.5 * len(dirs)))] for _ in range(n)]
    # about 4% of the files are copies of another (vendored twice, same icon in two places)
    copy_of = [None] * n
    for i in range(1, n):
        if rng.uniform() < 0.04:
            copy_of[i] = rng.below(i)
    # revision of every file at every version
    rev = [0] * n
    extra = 0
    for v in range(2, version + 1):
        vr = Stream("%s/v%d" % (seed, v))
        for i in range(n):
            if vr.uniform() < spec["change"]:
                rev[i] = v
        extra += max(1, n // 100)  # each version adds 1% new files
    entries = []
    for i in range(n):
        src = copy_of[i] if copy_of[i] is not None else i
        r = rev[src]
        size = sizes[src] if r == 0 or (src % 3) else int(sizes[src] * 1.1) + 17
        entries.append(("%s/f%05d.dat" % (where[i], i), "file",
                        _blob("%s/file/%d/rev%d" % (seed, src, r), size), 0o644))
    for j in range(extra):
        entries.append(("srv/app/lib/added/n%04d.dat" % j, "file",
                        _blob("%s/added/%d" % (seed, j), 2000 + 37 * j), 0o644))
    entries.append(("srv/app/VERSION", "file", b"%d\n" % version, 0o644))
    entries.sort(key=lambda e: e[0])
    return entries


def build_app_layers(workdir, spec, rebuild):
    names = []
    for v in range(1, spec["versions"] + 1):
        name = "app-v%d" % v
        path = os.path.join(workdir, name + ".tar")
        if rebuild or not os.path.exists(path):
            log("layer %s: generating %d files" % (name, spec["files"]))
            _write_tar(path, app_entries(v, spec))
        names.append(name)
    return names


def build_smoke(workdir, rebuild):
    """Tiny synthetic set: base, 3 images of overlapping 'packages', 3 app versions."""
    os.makedirs(workdir, exist_ok=True)
    layers = []
    path = os.path.join(workdir, "layer0.tar")
    rng = Stream("dhfs-dedup-bench/smoke/base")
    if rebuild or not os.path.exists(path):
        ents = []
        for i, size in enumerate(_sizes(rng, 200, 2 * 1000 * 1000)):
            ents.append(("usr/lib/base/b%03d.so" % i, "file", _blob("smoke/base/%d" % i, size), 0o644))
        ents.append(("usr/bin/sh", "symlink", "dash", 0))
        ents.append(("var/lib/dpkg/status", "file", b"base\n", 0o644))
        _write_tar(path, ents)
    layers.append("layer0")

    def package(name, nfiles):
        prng = Stream("dhfs-dedup-bench/smoke/pkg/" + name)
        return [("usr/lib/%s/p%03d" % (name, i), "file", _blob("smoke/pkg/%s/%d" % (name, i), s), 0o644)
                for i, s in enumerate(_sizes(prng, nfiles, 600 * 1000))]

    pkgs = {"python": 60, "yaml": 20, "perl": 50, "curl": 15}
    images = [("python", ["python"]), ("python-yaml", ["python", "yaml"]), ("perl-curl", ["perl", "curl"])]
    for name, members in images:
        lname = "img-" + name
        path = os.path.join(workdir, lname + ".tar")
        if rebuild or not os.path.exists(path):
            ents = []
            for m in members:
                ents += package(m, pkgs[m])
            # dpkg's status changes in every image (different content each time)
            ents.append(("var/lib/dpkg/status", "file", ("base\n" + "\n".join(members) + "\n").encode(), 0o644))
            ents.sort(key=lambda e: e[0])
            _write_tar(path, ents)
        layers.append(lname)
    layers += build_app_layers(workdir, APP_SMOKE, rebuild)
    return layers


# --------------------------------------------------------------------- debootstrap set

def _tar_dir(src, dest, names=None, exclude=()):
    """tar of src (everything, or only the relative paths in names, no recursion)."""
    tmp = dest + ".tmp"
    cmd = ["tar", "-C", src, "--numeric-owner", "--xattrs", "-cf", tmp] + ["--exclude=" + e for e in exclude]
    if names is None:
        run(cmd + ["."], timeout=1800)
    else:
        lst = dest + ".list"
        with open(lst, "wb") as f:
            f.write(b"".join(n.encode("utf-8", "surrogateescape") + b"\0" for n in names))
        run(cmd + ["--no-recursion", "--null", "-T", lst], timeout=1800)
        os.unlink(lst)
    os.replace(tmp, dest)


def _walk(root):
    """{relative path: lstat} of everything under root (root itself excluded)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = os.lstat(p)
    return out


def _same(a, b, pa, pb):
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode) or a.st_mode != b.st_mode:
        return False
    if (a.st_uid, a.st_gid) != (b.st_uid, b.st_gid):
        return False
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(pa) == os.readlink(pb)
    if stat.S_ISDIR(a.st_mode):
        return True  # a directory is in the layer only if new, changed, or a parent of one
    if stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode):
        return a.st_rdev == b.st_rdev
    # regular files: as docker's naive diff, size and mtime (a rewritten file is changed)
    return a.st_size == b.st_size and int(a.st_mtime) == int(b.st_mtime)


def diff_paths(base, image):
    """Relative paths that an image layer holds: what was added or changed in image
    relative to base, with their parent directories. Returns (paths, deleted count)."""
    b, i = _walk(base), _walk(image)
    changed = set()
    for p, st in i.items():
        old = b.get(p)
        if old is None or not _same(old, st, os.path.join(base, p), os.path.join(image, p)):
            changed.add(p)
    with_parents = set(changed)
    for p in changed:
        d = os.path.dirname(p)
        while d and d not in with_parents:
            with_parents.add(d)
            d = os.path.dirname(d)
    deleted = sum(1 for p in b if p not in i)
    return sorted(with_parents), deleted


def _chroot_install(root, packages, res, mirror):
    """apt-get install in a chroot, with /proc mounted (unmounted again by the caller's
    Resources stack, also on failure)."""
    mark = res.mark()
    try:
        proc = os.path.join(root, "proc")
        os.makedirs(proc, exist_ok=True)
        run(["mount", "-t", "proc", "proc", proc], timeout=60)
        res.add_mount(proc)
        shutil.copyfile("/etc/resolv.conf", os.path.join(root, "etc", "resolv.conf"))
        # no daemons started by maintainer scripts (as in docker builds)
        prc = os.path.join(root, "usr", "sbin", "policy-rc.d")
        with open(prc, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(prc, 0o755)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
               "LC_ALL": "C", "HOME": "/root"}
        run(["chroot", root, "apt-get", "-q", "update"], timeout=1200, env=env)
        run(["chroot", root, "apt-get", "-q", "-y", "--no-install-recommends", "install"] + packages,
            timeout=3600, env=env)
        _, out, _ = run(["chroot", root, "dpkg-query", "-W", "-f", "${Package}=${Version}\\n"],
                        timeout=120, env=env)
        run(["chroot", root, "apt-get", "clean"], timeout=600, env=env)
        os.unlink(prc)
        # as a Dockerfile's "rm -rf /var/lib/apt/lists/*"
        lists = os.path.join(root, "var", "lib", "apt", "lists")
        for n in os.listdir(lists):
            p = os.path.join(lists, n)
            if os.path.isfile(p) and n != "lock":
                os.unlink(p)
        return out.split()
    finally:
        res.unwind(mark)


def build_debian(workdir, res, rebuild, mirror, suite=SUITE, images=IMAGES, app=APP_FULL):
    """Build the missing layer tarballs in workdir; return the layer names in order."""
    os.makedirs(workdir, exist_ok=True)
    meta_path = os.path.join(workdir, "layers-build.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = {}
    names = ["layer0"] + ["img-" + n for n, _ in images]
    todo = [n for n in names if rebuild or not os.path.exists(os.path.join(workdir, n + ".tar"))]
    scratch = os.path.join(workdir, "scratch")
    if todo:
        check_mirror(mirror, suite)
        if os.path.exists(scratch):
            run(["rm", "-rf", "--one-file-system", scratch], timeout=600)
        os.makedirs(scratch)
        base = os.path.join(scratch, "base")
        l0 = os.path.join(workdir, "layer0.tar")
        if "layer0" in todo:
            log("layer0: debootstrap --variant=minbase %s from %s" % (suite, mirror))
            t = time.monotonic()
            try:
                run(["debootstrap", "--variant=minbase", suite, base, mirror], timeout=3600)
            finally:
                for m in ("proc", "sys", "dev/pts"):  # debootstrap unmounts these itself; be sure
                    p = os.path.join(base, m)
                    if os.path.ismount(p):
                        run(["umount", "-l", p], timeout=60, check=False)
            run(["chroot", base, "apt-get", "clean"], timeout=600)
            # no device nodes: docker's base images have an empty /dev (the runtime fills it)
            _tar_dir(base, l0, exclude=["./dev/*"])
            meta["layer0"] = {"built": time.strftime("%Y-%m-%d %H:%M"), "mirror": mirror, "suite": suite,
                              "seconds": round(time.monotonic() - t)}
        else:
            os.makedirs(base)
            run(["tar", "-C", base, "--numeric-owner", "--xattrs", "-xpf", l0], timeout=1800)
        for name, pkgs in images:
            lname = "img-" + name
            if lname not in todo:
                continue
            log("layer %s: apt-get install %s on a copy of the base" % (lname, " ".join(pkgs)))
            t = time.monotonic()
            root = os.path.join(scratch, name)
            run(["cp", "-a", base, root], timeout=1800)
            versions = _chroot_install(root, pkgs, res, mirror)
            paths, deleted = diff_paths(base, root)
            _tar_dir(root, os.path.join(workdir, lname + ".tar"), paths)
            meta[lname] = {"built": time.strftime("%Y-%m-%d %H:%M"), "mirror": mirror, "suite": suite,
                           "packages": pkgs, "entries": len(paths), "deleted_not_stored": deleted,
                           "installed": versions, "seconds": round(time.monotonic() - t)}
            run(["rm", "-rf", "--one-file-system", root], timeout=600)
            with open(meta_path, "w") as f:
                json.dump(meta, f, indent=1)
        run(["rm", "-rf", "--one-file-system", scratch], timeout=600)
        with open(meta_path, "w") as f:
            json.dump(meta, f, indent=1)
    return names + build_app_layers(workdir, app, rebuild), meta


# ----------------------------------------------------------------------- measuring

def measure(workdir, names):
    """Logical bytes, file counts and the unique-content limit of the set, by hashing
    every regular file of every layer tarball (sha256). Hard links inside a layer are one
    file (one inode once extracted). Cached per tarball (size + mtime)."""
    cache_path = os.path.join(workdir, "measure-cache.json")
    try:
        with open(cache_path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    contents = {}  # sha256 -> size
    layers = []
    for n in names:
        path = os.path.join(workdir, n + ".tar")
        st = os.stat(path)
        key = "%s:%d:%d" % (n, st.st_size, int(st.st_mtime))
        entry = cache.get(key)
        if entry is None:
            files = {}
            counts = {"files": 0, "dirs": 0, "symlinks": 0, "hardlinks": 0, "other": 0}
            with tarfile.open(path, "r:") as tar:
                for m in tar:
                    if m.isreg():
                        h = hashlib.sha256()
                        f = tar.extractfile(m)
                        for chunk in iter(lambda: f.read(1 << 20), b""):
                            h.update(chunk)
                        files[h.hexdigest()] = files.get(h.hexdigest(), [m.size, 0])
                        files[h.hexdigest()][1] += 1
                        counts["files"] += 1
                    elif m.isdir():
                        counts["dirs"] += 1
                    elif m.issym():
                        counts["symlinks"] += 1
                    elif m.islnk():
                        counts["hardlinks"] += 1
                    else:
                        counts["other"] += 1
            entry = {"counts": counts, "files": files, "tar_bytes": st.st_size}
            cache[key] = entry
        files = entry["files"]
        logical = sum(size * count for size, count in files.values())
        layers.append({"name": n, "id": layer_id(n), "tar_bytes": entry["tar_bytes"],
                       "logical_bytes": logical, **entry["counts"]})
        for digest, (size, _) in files.items():
            contents[digest] = size
    tmp = cache_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({k: v for k, v in cache.items() if k.split(":")[0] in names}, f)
    os.replace(tmp, cache_path)
    logical = sum(l["logical_bytes"] for l in layers)
    unique = sum(contents.values())
    unique_blocks = sum((s + 4095) // 4096 * 4096 for s in contents.values())
    return {"layers": layers, "logical_bytes": logical, "unique_bytes": unique,
            "unique_bytes_4k": unique_blocks, "distinct_contents": len(contents),
            "files": sum(l["files"] for l in layers),
            "entries": sum(l["files"] + l["dirs"] + l["symlinks"] + l["hardlinks"] + l["other"] for l in layers)}
