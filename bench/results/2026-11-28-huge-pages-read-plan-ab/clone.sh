#!/bin/bash
# clone job by hand on mnt; prints base read, overwrite, clone read
M=/var/tmp/exp/mnt
F="--direct=0 --fallocate=none --randrepeat=1 --ioengine=psync --output-format=terse --terse-version=3"
[ -f $M/base.bin ] || fio --name=mk --filename=$M/base.bin --size=1G --rw=write --bs=1M --end_fsync=1 --refill_buffers=1 --randrepeat=0 --output=/dev/null
rm -f $M/clone.bin; sync; echo 3 > /proc/sys/vm/drop_caches
b=$(fio --name=br --filename=$M/base.bin --size=1G --rw=read --bs=1M $F | cut -d';' -f7)
cp --reflink=auto $M/base.bin $M/clone.bin; sync
w=$(fio --name=ow --filename=$M/clone.bin --size=1G --rw=randwrite --bs=4k --io_size=256M --norandommap=0 --end_fsync=1 --refill_buffers=1 $F | cut -d';' -f49)
echo 3 > /proc/sys/vm/drop_caches
if [ -n "$PERF" ]; then perf record -g -p $(pgrep -x dhfs) -o perf.clone -- sleep 3 >/dev/null 2>&1 & fi
P=$(pgrep -x dhfs); t0=$(awk '{print $14+$15}' /proc/$P/stat)
c=$(fio --name=cr --filename=$M/clone.bin --size=1G --rw=read --bs=1M $F | cut -d';' -f7)
t1=$(awk '{print $14+$15}' /proc/$P/stat)
wait
echo "cpu_ticks=$((t1-t0)) base_read_KBps=$b overwrite_iops=$w clone_read_KBps=$c ratio=$(echo "scale=2; $c/$b" | bc)"
