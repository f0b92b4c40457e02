import re,collections,statistics,sys
pat=re.compile(r'\s*(\S+)\s+\d+ \[(\d+)\] (\d+\.\d+):\s+(\S+)\s(.*)')
ev=[]
for l in open(sys.argv[1]):
    m=pat.match(l)
    if m: ev.append((float(m.group(3))*1e6,m.group(1),int(m.group(2)),m.group(4),m.group(5)))
res=collections.defaultdict(list)
for i,(t,comm,cpu,name,rest) in enumerate(ev):
    if name.startswith('block:block_rq_issue') and rest.startswith('7,0') and comm.startswith(sys.argv[2]):
        tgt=None; vi=None
        for t2,c2,cpu2,n2,r2 in ev[i+1:i+40]:
            if n2.startswith('sched:sched_wakeup') and 'kworker' in r2 and tgt is None:
                tgt=int(re.search(r'target_cpu=(\d+)',r2).group(1))
            if n2.startswith('block:block_rq_issue') and r2.startswith('254,0'):
                vi=t2; break
        if vi: res['woken-same' if tgt==cpu else ('woken-other' if tgt is not None else 'no-wakeup')].append(vi-t)
for k,v in res.items(): print(k,len(v),'mean %.1f p50 %.1f'%(statistics.mean(v),statistics.median(v)))
