#!/bin/bash
# usage: ra_lat.sh RA  -> cold 2 GiB seq read on CPU 0 with a getxattr latency probe on CPU 0
set -e
cd /var/tmp/exp
B=/work/main/build/release/tools
LOOP=$(cat loop)
$B/dhfs $LOOP mnt -o readahead=$1
sync; echo 3 > /proc/sys/vm/drop_caches
taskset -c 0 python3 lat.py mnt/probe 1.2 > lat.out &
sleep 0.3
bw=$(taskset -c 0 fio --name=r --filename=mnt/f --size=2G --rw=read --bs=1M --ioengine=psync --direct=0 --output-format=terse --terse-version=3 | cut -d';' -f7)
wait
echo "ra=$1 read=$((bw/1024))MB/s $(cat lat.out)"
umount mnt; sleep 0.5
