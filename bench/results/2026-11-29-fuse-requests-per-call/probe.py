#!/usr/bin/env python3
"""FUSE requests each system call of an untar and an rm -rf costs on a dhfs mount.

usage: probe.py MOUNTPOINT [DHFSCTL]

Counts come from `dhfsctl --json requests` before and after each call, minus what one
dhfsctl call costs by itself (measured twice in a row at the start). Run as root on a
mount with nothing else going on. The file is created as tar -x creates one as root
(open O_CREAT|O_EXCL, write, fchown, fchmod, futimens, close) and then removed as rm -rf removes one.
"""
import json
import os
import subprocess
import sys

mnt = sys.argv[1]
ctl = sys.argv[2] if len(sys.argv) > 2 else "dhfsctl"


def snap():
    out = subprocess.run([ctl, "--json", "requests", mnt], capture_output=True, text=True, check=True).stdout
    return {x["request"]: x["count"] for x in json.loads(out)["requests"]}


a = snap()
b = snap()
own = {k: b.get(k, 0) - a.get(k, 0) for k in b}
prev = snap()


def step(what):
    global prev
    cur = snap()
    d = {k: cur.get(k, 0) - prev.get(k, 0) - own.get(k, 0) for k in cur}
    print("%-44s %s" % (what, ", ".join("%s %d" % kv for kv in sorted(d.items()) if kv[1]) or "-"))
    prev = snap()


d = os.path.join(mnt, "probe-%d" % os.getpid())
os.mkdir(d)
step("mkdir of the directory")
p = os.path.join(d, "file")
fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
step("open(O_CREAT|O_EXCL) of a new name")
os.write(fd, b"x" * 5000)
step("write 5000 bytes (first write)")
os.write(fd, b"y" * 5000)
step("write 5000 bytes more")
os.fchown(fd, 1000, 1000)
step("fchown")
os.fchmod(fd, 0o644)
step("fchmod")
os.utime(fd, (1000000, 1000000))
step("futimens")
os.close(fd)
step("close")
os.stat(p)
step("stat")
os.unlink(p)
step("unlink")
os.rmdir(d)
step("rmdir")
