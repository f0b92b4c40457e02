import os, sys, time
p=sys.argv[1]; dur=float(sys.argv[2])
lat=[]; end=time.monotonic()+dur
while time.monotonic()<end:
    t=time.perf_counter_ns()
    try: os.getxattr(p, "user.none")
    except OSError: pass
    lat.append(time.perf_counter_ns()-t)
lat.sort(); n=len(lat)
print("n=%d p50=%.0f p99=%.0f p999=%.0f max=%.0f us" % (n, lat[n//2]/1e3, lat[n*99//100]/1e3, lat[n*999//1000]/1e3, lat[-1]/1e3))
