#!/usr/bin/python3
"""Timed metadata workloads, run by the suite as a child process (so a hung mount can be
timed out and killed without hanging the suite). Prints one JSON object on stdout.

  fsops.py create DIR N [NDIRS]   create N empty files (spread over NDIRS subdirectories)
  fsops.py list DIR N [NDIRS]     readdir every directory, check that N files are there
  fsops.py delete DIR N [NDIRS]   unlink the N files and remove the directories
  fsops.py copyup FILE            open(O_WRONLY|O_APPEND) (overlayfs copies the file up
                                  here), append one byte, close
"""

import json
import os
import sys
import time


def names(root, n, ndirs):
    if ndirs <= 1:
        for i in range(n):
            yield os.path.join(root, "entry-%07d" % i)
    else:
        for i in range(n):
            yield os.path.join(root, "d%04d" % (i % ndirs), "entry-%07d" % i)


def subdirs(root, ndirs):
    return [root] if ndirs <= 1 else [os.path.join(root, "d%04d" % j) for j in range(ndirs)]


def create(root, n, ndirs):
    t = time.perf_counter()
    os.mkdir(root)
    if ndirs > 1:
        for d in subdirs(root, ndirs):
            os.mkdir(d)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for p in names(root, n, ndirs):
        os.close(os.open(p, flags, 0o644))
    return {"seconds": time.perf_counter() - t}


def listdir(root, n, ndirs):
    t = time.perf_counter()
    count = 0
    for d in subdirs(root, ndirs):
        with os.scandir(d) as it:
            for _ in it:
                count += 1
    elapsed = time.perf_counter() - t
    if count != n:
        raise SystemExit("listing %s found %d entries, expected %d" % (root, count, n))
    return {"seconds": elapsed, "entries": count}


def delete(root, n, ndirs):
    t = time.perf_counter()
    for p in names(root, n, ndirs):
        os.unlink(p)
    if ndirs > 1:
        for d in subdirs(root, ndirs):
            os.rmdir(d)
    os.rmdir(root)
    return {"seconds": time.perf_counter() - t}


def copyup(path):
    t = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    t_open = time.perf_counter() - t
    os.write(fd, b"x")
    os.close(fd)
    return {"seconds": time.perf_counter() - t, "open_seconds": t_open}


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    op, path = argv[1], argv[2]
    if op == "copyup":
        result = copyup(path)
    else:
        n = int(argv[3])
        ndirs = int(argv[4]) if len(argv) > 4 else 1
        result = {"create": create, "list": listdir, "delete": delete}[op](path, n, ndirs)
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main(sys.argv)
    except OSError as e:
        raise SystemExit("%s: %s" % (e.filename or "", e.strerror))
