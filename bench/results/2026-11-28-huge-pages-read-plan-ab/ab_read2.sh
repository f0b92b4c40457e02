#!/bin/bash
M=/var/tmp/exp/mnt
L=$(basename $(cat /var/tmp/exp/loop))
F="--direct=0 --fallocate=none --ioengine=psync --output-format=terse --terse-version=3"
for r in $(seq $1); do
 for v in $ORDER; do
  umount $M; sleep 0.5
  if [ $v = old ]; then B=/var/tmp/exp/wt/build/tools; else B=/work/main/build/release/tools; fi
  $B/dhfs $(cat /var/tmp/exp/loop) $M
  sync; echo 3 > /proc/sys/vm/drop_caches
  r0=$(awk '{print $1, $3}' /sys/block/$L/stat); v0=$(awk '{print $1}' /sys/block/vda/stat)
  c=$(fio --name=cr --filename=$M/$FILE --size=1G --rw=read --bs=1M $F | cut -d';' -f7)
  r1=$(awk '{print $1, $3}' /sys/block/$L/stat); v1=$(awk '{print $1}' /sys/block/vda/stat)
  echo "$v $FILE=$c loop(reads sectors) $r0 -> $r1 vda reads $((v1-v0))"
 done
done
