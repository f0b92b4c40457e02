"""Mode profiles: the sizes of every job in smoke, quick and full mode.

Any field can be overridden from the command line with --set FIELD=VALUE
(sizes accept K/M/G suffixes), e.g. --set clone_size=1G --set dir_entries=100000.
"""

from .util import parse_size

M = 1 << 20
G = 1 << 30

PROFILES = {
    # every job on every filesystem with tiny sizes: proves the suite runs, times mean nothing
    "smoke": dict(
        image_size=1 * G, repeat=1, timeout=180,
        seq_size=32 * M, rand_read_io=2 * M, rand_write_io=4 * M, mixed_io=2 * M, io_cap=10,
        fsync_count=100, tree_files=300, tree_bytes=3 * 1000 * 1000, dir_entries=1000,
        clone_size=32 * M, million_files=2000, million_dirs=20,
        jobs_default="all"),
    # the whole table in under five minutes on a 2-core VM: smaller files, same method
    "quick": dict(
        image_size=4 * G, repeat=3, timeout=900,
        seq_size=256 * M, rand_read_io=16 * M, rand_write_io=32 * M, mixed_io=16 * M, io_cap=5,
        fsync_count=500, tree_files=4250, tree_bytes=56250000, dir_entries=5000,
        clone_size=128 * M, million_files=1000000, million_dirs=1000,
        jobs_default="all-but-million"),
    # what issues 3 and 7 ask for
    "full": dict(
        image_size=8 * G, repeat=3, timeout=3600,
        seq_size=2 * G, rand_read_io=256 * M, rand_write_io=512 * M, mixed_io=256 * M, io_cap=60,
        fsync_count=10000, tree_files=34000, tree_bytes=450 * 1000 * 1000, dir_entries=100000,
        clone_size=1 * G, million_files=1000000, million_dirs=1000,
        jobs_default="all"),
}

SIZE_FIELDS = {"image_size", "seq_size", "rand_read_io", "rand_write_io", "mixed_io",
               "clone_size"}


def profile(mode, overrides=()):
    p = dict(PROFILES[mode])
    p["mode"] = mode
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in p or key in ("mode", "jobs_default"):
            raise ValueError("--set %s: unknown field (known: %s)" % (
                item, ", ".join(sorted(k for k in p if k not in ("mode", "jobs_default")))))
        p[key] = parse_size(value) if key in SIZE_FIELDS else (
            int(parse_size(value)) if key == "tree_bytes" else int(value))
    return p
