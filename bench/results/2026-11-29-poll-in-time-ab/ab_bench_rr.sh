#!/bin/bash
# alternate HEAD (wt) and the working tree on the suite's random and fsync jobs, dhfs only, full sizes
cd /work/main
for r in 1 2 3 4 5; do
  for v in old new; do
    if [ $v = old ]; then B=/var/tmp/exp/wt/build/tools; else B=/work/main/build/release/tools; fi
    bench/run.py --mode full --only dhfs --jobs randread1 --repeat 1 --require-dhfs --dhfs-bin $B --out /var/tmp/exp/abr-$v-$r > /dev/null 2>&1
    echo "$v $r $(grep -E '^\| (rand|randrw|4 KiB).*\| dhfs \|' /var/tmp/exp/abr-$v-$r/report.md | awk -F'|' '{print $4}' | tr -d ' ' | tr '\n' ' ')"
  done
done
