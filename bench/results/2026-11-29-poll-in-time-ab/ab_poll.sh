#!/bin/bash
# alternate HEAD (wt) and the working tree's dhfs on cold 4K random reads QD1, with the raw device between
cd /var/tmp/exp; L=$(cat loop)
for r in $(seq $1); do
  for v in old new; do
    umount mnt; sleep 0.5
    if [ $v = old ]; then B=/var/tmp/exp/wt/build/tools; else B=/work/main/build/release/tools; fi
    $B/dhfs $L mnt
    echo "$v $r $(./rr.sh mnt/f 15)"
  done
  echo "raw $r $(fio --name=raw --filename=$L --readonly --rw=randread --bs=4k --size=8G --time_based --runtime=5 --ioengine=psync --direct=1 --output-format=json | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]["read"]; print("iops %.0f  clat mean %.1f us p50 %.1f" % (j["iops"], j["clat_ns"]["mean"]/1e3, j["clat_ns"]["percentile"]["50.000000"]/1e3))')"
done
