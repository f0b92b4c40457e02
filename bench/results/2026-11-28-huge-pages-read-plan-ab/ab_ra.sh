#!/bin/bash
# alternate readahead settings on one clone (new daemon)
M=/var/tmp/exp/mnt
F="--direct=0 --fallocate=none --ioengine=psync --output-format=terse --terse-version=3"
for r in $(seq $1); do
 for ra in $RAS; do
  umount $M; sleep 0.5
  /work/main/build/release/tools/dhfs $(cat /var/tmp/exp/loop) $M -o readahead=$ra
  sync; echo 3 > /proc/sys/vm/drop_caches
  c=$(fio --name=cr --filename=$M/clone.bin --size=1G --rw=read --bs=1M $F | cut -d';' -f7)
  echo 3 > /proc/sys/vm/drop_caches
  b=$(fio --name=br --filename=$M/base.bin --size=1G --rw=read --bs=1M $F | cut -d';' -f7)
  echo "ra=$ra clone=$c base=$b"
 done
done
