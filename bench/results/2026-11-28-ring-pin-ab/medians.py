#!/usr/bin/env python3
"""Medians per ring_pin setting and guest halt polling from the runs in this folder."""
import glob, json, os, statistics, sys

HERE = os.path.dirname(os.path.abspath(__file__))
METRICS = [("untar.extract_s", "untar 4250 files (s)"), ("untar.read_s", "read all files, cold (s)"),
           ("untar.rm_s", "rm -rf the tree (s)"), ("bigdir.create_s", "create 5k files in one directory (s)"),
           ("bigdir.delete_s", "delete the 5k files (s)"), ("copyup.time_s", "overlay copy-up 128 MiB (s)"),
           ("seqwrite.mbps", "seq write 256 MiB (MB/s)"), ("seqread.mbps", "seq read, cold (MB/s)"),
           ("randread1.iops", "rand read 4 KiB QD1 (IOPS)"), ("randread32.iops", "rand read 4 KiB QD32 (IOPS)"),
           ("randwrite1.iops", "rand write 4 KiB QD1 (IOPS)"), ("randwrite32.iops", "rand write 4 KiB QD32 (IOPS)"),
           ("mixed.iops", "randrw 70/30 QD32 (IOPS)")]
for poll, label in (("p0", "guest halt polling off (guest_halt_poll_ns 0, this VM's setting)"),
                    ("p2", "guest halt polling on (guest_halt_poll_ns 200000, the kernel's default)")):
    runs = {}
    for d in sorted(glob.glob(os.path.join(HERE, poll + "-*-*"))):
        pin = os.path.basename(d).split("-")[1]
        j = json.load(open(os.path.join(d, "results.json")))
        r = runs.setdefault(pin, {})
        for k, v in j["results"]["dhfs"].items():
            r.setdefault(k, []).extend(v)
        r.setdefault("rt", []).extend(j["fuse_round_trip_us"])
    pins = ["auto", "off", "on"]
    print("\n### %s\n" % label)
    print("| job | " + " | ".join("ring_pin=%s" % p for p in pins) + " | auto / off |")
    print("|---|" + "---:|" * (len(pins) + 1))
    rows = [("rt", "one round trip, getxattr (us)")] + METRICS
    for key, name in rows:
        med = {p: statistics.median(runs[p][key]) for p in pins}
        cells = ["%.3g (%s)" % (med[p], ", ".join("%.3g" % x for x in runs[p][key])) for p in pins]
        lower_better = key == "rt" or key.endswith("_s")
        ratio = med["off"] / med["auto"] if lower_better else med["auto"] / med["off"]
        print("| %s | %s | %.2fx |" % (name, " | ".join(cells), ratio))
