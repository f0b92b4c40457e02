#!/bin/bash
# usage: setup.sh [mount opts]   (image pre-filled like the bench's)
set -e
B=/work/main/build/release/tools
if [ ! -f /var/tmp/exp/img.filled ]; then
  rm -f /var/tmp/exp/img; truncate -s 8G /var/tmp/exp/img
  fio --name=fill --filename=/var/tmp/exp/img --rw=write --bs=4M --size=8G --direct=1 --ioengine=psync --end_fsync=1 --refill_buffers=1 --fallocate=none --output=/dev/null
  touch /var/tmp/exp/img.filled
fi
LOOP=$(losetup -f --show --direct-io=on /var/tmp/exp/img)
echo 0 > /sys/block/$(basename $LOOP)/queue/discard_max_bytes
echo $LOOP > /var/tmp/exp/loop
$B/mkfs.dhfs -f $LOOP >/dev/null
mkdir -p /var/tmp/exp/mnt
$B/dhfs $LOOP /var/tmp/exp/mnt ${1:+-o $1}
