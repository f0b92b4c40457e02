"""Runs a benchmark's main() so that Ctrl-C, SIGTERM and SIGHUP unwind every
loop device, mount and daemon it made, and turns the outcome into the exit
status the suites document (0 ran, 1 a job failed or a fatal error after the
start, 2 could not start, 130 interrupted)."""

import signal
import sys

from benchlib.util import BenchError, Interrupted, elapsed_total, log


def run_guarded(r, prog, has_results, finish):
    """r: the run (main(), res, out, notes, failures, finished); prog: name for
    messages; has_results(r): whether there is anything to report;
    finish(r, interrupted): writes the results and the report."""
    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    # also when started with SIGINT ignored (e.g. "cmd &" from a script)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupted, fatal = False, None
    try:
        r.main()
    except (KeyboardInterrupt, Interrupted) as e:
        interrupted = True
        print("\ninterrupted (%s); cleaning up" % (str(e) or "SIGINT"), file=sys.stderr)
    except BenchError as e:
        fatal = str(e)
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        if getattr(r, "res", None) is not None:
            r.res.unwind(0)
    if fatal and not getattr(r, "out", None):
        print("%s: %s" % (prog, fatal), file=sys.stderr)
        return 2
    if fatal:
        log("fatal: %s" % fatal)
        r.notes.append("fatal: %s" % fatal)
    if getattr(r, "out", None) and has_results(r):
        r.finished = not (interrupted or fatal)
        finish(r, interrupted or bool(fatal))
    log("done in %d min %d s" % divmod(int(elapsed_total()), 60))
    if interrupted:
        return 130
    if fatal or r.failures:
        return 1
    return 0
