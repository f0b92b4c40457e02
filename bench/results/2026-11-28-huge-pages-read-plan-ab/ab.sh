#!/bin/bash
# ab.sh ROUNDS: alternate old (wt) and new daemon on one filesystem; clone job by hand
for r in $(seq $1); do
 for v in $ORDER; do
  umount /var/tmp/exp/mnt; sleep 0.5
  if [ $v = old ]; then B=/var/tmp/exp/wt/build/tools; else B=/work/main/build/release/tools; fi
  $B/dhfs $(cat /var/tmp/exp/loop) /var/tmp/exp/mnt
  echo "$v $(./clone.sh)"
 done
done
