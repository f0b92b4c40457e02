#!/bin/bash
# ab_write.sh ROUNDS: alternate daemons ($ORDER), 2 GiB sequential write with end_fsync
M=/var/tmp/exp/mnt
L=$(basename $(cat /var/tmp/exp/loop))
F="--direct=0 --fallocate=none --ioengine=psync --output-format=terse --terse-version=3 --refill_buffers=1 --randrepeat=0"
for r in $(seq $1); do
 for v in $ORDER; do
  umount $M; sleep 0.5
  if [ $v = old ]; then B=/var/tmp/exp/wt/build/tools; else B=/work/main/build/release/tools; fi
  $B/dhfs $(cat /var/tmp/exp/loop) $M
  rm -f $M/w.bin; sync; echo 3 > /proc/sys/vm/drop_caches
  w0=$(awk '{print $5}' /sys/block/$L/stat)
  w=$(fio --name=sw --filename=$M/w.bin --size=2G --rw=write --bs=1M --end_fsync=1 $F | cut -d';' -f48)
  w1=$(awk '{print $5}' /sys/block/$L/stat)
  echo "$v seqwrite_KBps=$w loop_writes=$((w1-w0))"
 done
done
