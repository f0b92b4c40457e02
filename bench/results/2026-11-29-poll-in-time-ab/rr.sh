#!/bin/bash
# rr.sh FILE SECONDS : cold 4K random read QD1, prints IOPS and mean clat us
sync; echo 3 > /proc/sys/vm/drop_caches
fio --name=rr --filename=$1 --rw=randread --bs=4k --size=2G --io_size=256M --runtime=${2:-15} --time_based=0 --ioengine=psync --direct=0 --randrepeat=1 --output-format=json | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]["read"]; print("iops %.0f  clat mean %.1f us p50 %.1f p99 %.1f" % (j["iops"], j["clat_ns"]["mean"]/1e3, j["clat_ns"]["percentile"]["50.000000"]/1e3, j["clat_ns"]["percentile"]["99.000000"]/1e3))'
