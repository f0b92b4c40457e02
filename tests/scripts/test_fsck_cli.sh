#!/bin/bash
# Command-line behaviour of fsck.dhfs: exit codes, one-line errors, repair of
# a damaged superblock from its backup, refusal of a device in use.
# Usage: test_fsck_cli.sh BIN_DIR (the directory holding mkfs.dhfs and fsck.dhfs)
set -euo pipefail

bin=${1:?usage: $0 BIN_DIR}
mkfs="$bin/mkfs.dhfs"
fsck="$bin/fsck.dhfs"
for tool in "$mkfs" "$fsck"; do
  [[ -x $tool ]] || { echo "missing $tool" >&2; exit 1; }
done

tmp=$(mktemp -d)
holder=
cleanup() {
  if [[ -n $holder ]]; then kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# Runs fsck with the given arguments; sets $rc, $out and $err.
run_fsck() {
  set +e
  "$fsck" "$@" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  set -e
  out=$(cat "$tmp/out")
  err=$(cat "$tmp/err")
}

expect_rc() {  # expected, description
  if [[ $rc -ne $1 ]]; then
    fail "$2: exit $rc, expected $1 (stdout: $out) (stderr: $err)"
  fi
}

# A crash is a signal (exit >= 128) or a sanitizer report.
expect_no_crash() {
  if [[ $rc -ge 128 ]] || grep -q -e 'Sanitizer' -e 'runtime error' "$tmp/err"; then
    fail "$1: crashed (exit $rc): $err"
  fi
}

expect_one_line_error() {  # description, pattern
  local lines
  lines=$(wc -l <"$tmp/err")
  if [[ $lines -ne 1 ]]; then fail "$1: expected one line on stderr, got $lines: $err"; fi
  if ! grep -q -e "$2" "$tmp/err"; then fail "$1: stderr does not mention '$2': $err"; fi
}

img="$tmp/img"
"$mkfs" -s 256M "$img" >/dev/null

# --- a fresh filesystem is clean, with -n and with a repair run
run_fsck -n "$img"
expect_rc 0 "fsck -n on a fresh image"
grep -q ': clean$' <<<"$out" || fail "fsck -n on a fresh image: no 'clean' summary: $out"
[[ -z $err ]] || fail "fsck -n on a fresh image wrote to stderr: $err"
run_fsck "$img"
expect_rc 0 "fsck (repair) on a fresh image"
run_fsck -y -v "$img"
expect_rc 0 "fsck -y -v on a fresh image"
grep -q 'note: checkpoint root' <<<"$out" || fail "fsck -v prints no notes: $out"

# --- usage errors
run_fsck
expect_rc 16 "fsck without a device"
run_fsck -n -y "$img"
expect_rc 16 "fsck -n -y"
run_fsck -q "$img"
expect_rc 16 "fsck with an unknown option"
expect_one_line_error "fsck with an unknown option" "unknown option"

# --- things that are not dhfs: one line, exit 8, no crash
head -c $((64 << 20)) /dev/zero >"$tmp/zeros"
run_fsck -n "$tmp/zeros"
expect_rc 8 "fsck -n on 64 MiB of zeros"
expect_no_crash "fsck -n on 64 MiB of zeros"
expect_one_line_error "fsck -n on 64 MiB of zeros" "not a dhfs filesystem"
run_fsck "$tmp/zeros"
expect_rc 8 "fsck (repair) on 64 MiB of zeros"
cmp -s "$tmp/zeros" <(head -c $((64 << 20)) /dev/zero) || fail "fsck changed a file that is not dhfs"

head -c 1024 /dev/urandom >"$tmp/tiny"
run_fsck -n "$tmp/tiny"
expect_rc 8 "fsck -n on a 1 KiB file"
expect_no_crash "fsck -n on a 1 KiB file"
expect_one_line_error "fsck -n on a 1 KiB file" "not a dhfs filesystem"

run_fsck -n "$tmp/does-not-exist"
expect_rc 8 "fsck -n on a missing file"
expect_one_line_error "fsck -n on a missing file" "does-not-exist"

run_fsck -n "$tmp"
expect_rc 8 "fsck -n on a directory"
expect_one_line_error "fsck -n on a directory" "not a block device or regular file"

# --- a damaged primary superblock: found by -n, repaired from the backup
printf 'garbage!' | dd of="$img" bs=1 seek=100 conv=notrunc status=none
cp "$img" "$tmp/damaged"
run_fsck -n "$img"
expect_rc 4 "fsck -n on a damaged superblock"
expect_no_crash "fsck -n on a damaged superblock"
grep -q 'primary superblock' <<<"$out" || fail "fsck -n does not name the superblock: $out"
cmp -s "$img" "$tmp/damaged" || fail "fsck -n modified the image"
run_fsck -y "$img"
expect_rc 1 "fsck -y on a damaged superblock"
grep -q 'repaired: rewrote the primary superblock' <<<"$out" || fail "fsck -y reports no repair: $out"
run_fsck -n "$img"
expect_rc 0 "fsck -n after the repair"

# --- the image grew (truncate) but the filesystem did not: the backup is
# not at the device's end. A damaged primary that still names the size leads
# to it; one that lost the size too needs -b, and says so in one line.
cp "$img" "$tmp/grown"
truncate -s 300M "$tmp/grown"
backup=$((256 * 256 - 1))
printf 'garbage!' | dd of="$tmp/grown" bs=1 seek=100 conv=notrunc status=none
run_fsck -y "$tmp/grown"
expect_rc 1 "fsck -y on a grown image with a damaged primary"
grep -q "from the backup at block $backup" <<<"$out" || fail "fsck -y did not use the backup at $backup: $out"
head -c 200 /dev/urandom | dd of="$tmp/grown" bs=1 seek=8 conv=notrunc status=none
run_fsck -y "$tmp/grown"
expect_rc 4 "fsck -y on a grown image whose primary lost its size"
expect_one_line_error "fsck -y on a grown image whose primary lost its size" "give its backup with -b"
run_fsck -b x "$tmp/grown"
expect_rc 16 "fsck -b with a bad block number"
expect_one_line_error "fsck -b with a bad block number" "needs a block number"
run_fsck -y -b "$backup" "$tmp/grown"
expect_rc 1 "fsck -y -b $backup"
run_fsck -n "$tmp/grown"
expect_rc 0 "fsck -n after the repair from -b"

# --- a damaged checkpoint: unrecoverable, one line, exit 4
cp "$img" "$tmp/ckpt"
# The stream starts at the first extent listed in the current root (slot A
# or B, whichever has the higher seq): 8-byte start block at offset 72.
seq_a=$(od -An -tu8 -j $((4096 + 8)) -N8 "$img" | tr -d ' ')
seq_b=$(od -An -tu8 -j $((8192 + 8)) -N8 "$img" | tr -d ' ')
root_off=4096
if [[ $seq_b =~ ^[0-9]+$ && $seq_a =~ ^[0-9]+$ && $seq_b -gt $seq_a ]]; then root_off=8192; fi
start=$(od -An -tu8 -j $((root_off + 72)) -N8 "$img" | tr -d ' ')
printf 'X' | dd of="$tmp/ckpt" bs=1 seek=$((start * 4096 + 50)) conv=notrunc status=none
run_fsck -y "$tmp/ckpt"
expect_rc 4 "fsck -y on a damaged checkpoint"
expect_no_crash "fsck -y on a damaged checkpoint"
expect_one_line_error "fsck -y on a damaged checkpoint" "checkpoint"

# --- a device held by another process: one line, exit 8
# flock(1) takes the lock on descriptor 9, which the subshell keeps open
# after it becomes `sleep`: killing $holder releases the lock.
( flock -x 9 && exec sleep 30 ) 9<"$img" &
holder=$!
for _ in $(seq 100); do
  if ! flock -n "$img" true 2>/dev/null; then break; fi
  sleep 0.05
done
run_fsck -n "$img"
expect_rc 8 "fsck -n on a locked image"
expect_one_line_error "fsck -n on a locked image" "in use"
run_fsck -y "$img"
expect_rc 8 "fsck -y on a locked image"
expect_one_line_error "fsck -y on a locked image" "in use"
kill "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true
holder=
run_fsck -n "$img"
expect_rc 0 "fsck -n once the lock is gone"

if [[ $failures -ne 0 ]]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "fsck.dhfs command line: all checks passed"
