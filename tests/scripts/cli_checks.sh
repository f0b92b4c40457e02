# Sourced by the command-line script tests: how they run a tool and judge
# its exit and its stderr. Expects $tmp (scratch directory) and $mnt (the
# mount point) to be set, and counts failures in $failures.
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# run CMD...: sets $rc, $out, $err
run() {
  set +e
  "$@" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  set -e
  out=$(cat "$tmp/out")
  err=$(cat "$tmp/err")
}
# expect_fail WHAT PATTERN: non-zero exit, exactly one stderr line matching PATTERN
expect_fail() {
  if [[ $rc -eq 0 ]]; then fail "$1: succeeded, expected failure"; return; fi
  if [[ $rc -ge 128 ]]; then fail "$1: killed by signal $((rc - 128))"; fi
  local lines
  lines=$(printf '%s' "$err" | grep -c . || true)
  [[ $lines -eq 1 ]] || fail "$1: expected one line on stderr, got $lines: $err"
  [[ $err =~ $2 ]] || fail "$1: stderr '$err' does not match '$2'"
}
expect_ok() { [[ $rc -eq 0 ]] || fail "$1: exit $rc ($err)"; }
wait_gone() {  # the daemon of IMG exits after the unmount
  for _ in $(seq 100); do pgrep -f "dhfs $1 " >/dev/null || return 0; sleep 0.1; done
  fail "daemon for $1 still running"
}
unmount() { umount "$mnt"; wait_gone "$1"; }
