#!/bin/bash
# dhfsctl grow: a mounted dhfs grows onto a larger image file (extended by
# dhfs itself, or by the operator with truncate) and onto a loop device
# whose backing file grew (losetup -c, as after lvextend); past 1 GiB the
# journal keeps its size (JOURNAL_FIXED). Shrinking, a device too small,
# non-root callers and read-only mounts get one line and a non-zero exit.
# Contents and fsck are checked after every remount.
# Usage: test_grow_cli.sh BIN_DIR
set -euo pipefail

bin=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
for tool in mkfs.dhfs dhfs fsck.dhfs dhfsctl; do
  [[ -x $bin/$tool ]] || { echo "missing $bin/$tool" >&2; exit 1; }
done
export PATH="$bin:$PATH"

tmp=$(mktemp -d)
chmod 755 "$tmp"  # nobody reaches the mount point
mnt=$tmp/mnt
mkdir -p "$mnt"
loop=
cleanup() {
  for m in $(grep -o " $tmp[^ ]*" /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
  pkill -f "dhfs $tmp/" 2>/dev/null || true
  [[ -z $loop ]] || pkill -f "dhfs $loop " 2>/dev/null || true
  for l in $(losetup -j "$tmp/loop.img" -O NAME -n 2>/dev/null); do losetup -d "$l" || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

source "$(dirname "$0")/cli_checks.sh"
size_of() { stat -f -c '%b %S' "$mnt" | awk '{print $1 * $2}'; }  # statfs f_blocks * f_frsize
mib() { echo $(($1 << 20)); }

# ---- an image file: dhfs extends it
img=$tmp/a.img
mkfs.dhfs -s 256M "$img" >/dev/null
dhfs "$img" "$mnt" -o allow_other  # nobody may reach it, to be refused by dhfs
head -c 150M /dev/urandom > "$tmp/keep"
cp "$tmp/keep" "$mnt/keep"
size0=$(size_of)
head -c 250M /dev/urandom > "$tmp/more"
run cp "$tmp/more" "$mnt/more"
[[ $rc -ne 0 ]] || fail "250 MiB more fit into a 256 MiB filesystem holding 150 MiB"
rm -f "$mnt/more"

run dhfsctl grow "$mnt" --size 128M
expect_fail "shrink" "$mnt: the filesystem is 256.0 MiB; dhfs grows but cannot shrink"
run setpriv --reuid=65534 --regid=65534 --clear-groups dhfsctl grow "$mnt" --size 512M
expect_fail "grow as nobody" "only root can grow a filesystem"
[[ $(stat -c %s "$img") -eq $(mib 256) ]] || fail "a refused grow changed the image size"

run dhfsctl grow "$mnt" --size 512M
expect_ok "grow to 512M"
[[ $out == "$mnt: grown from 256.0 MiB to 512.0 MiB" ]] || fail "grow output: '$out'"
[[ $(stat -c %s "$img") -eq $(mib 512) ]] || fail "image not extended to 512 MiB: $(stat -c %s "$img")"
size1=$(size_of)
[[ $((size1 - size0)) -eq $(mib 256) ]] || fail "statfs grew by $((size1 - size0)) bytes, not 256 MiB"
cp "$tmp/more" "$mnt/more" || fail "250 MiB did not fit after growing to 512 MiB"

run dhfsctl grow "$mnt"
expect_ok "grow to the whole image"
[[ $out == "$mnt: already 512.0 MiB; the device has 512.0 MiB" ]] || fail "grow to the same size: '$out'"

# The operator extends the image; grow without a size takes all of it.
truncate -s 768M "$img"
run dhfsctl --json grow "$mnt"
expect_ok "grow after truncate"
[[ $out == '{"old_bytes":536870912,"new_bytes":805306368,"device_bytes":805306368}' ]] || fail "json: '$out'"
unmount "$img"
run fsck.dhfs -n "$img"; [[ $rc -eq 0 ]] || fail "fsck after growing: exit $rc: $out $err"

# Past 1 GiB the layout rule would size the journal differently: it stays.
dhfs "$img" "$mnt"
cmp "$tmp/keep" "$mnt/keep" || fail "keep differs after remount"
run dhfsctl grow "$mnt" --size 2G; expect_ok "grow to 2G"
head -c 300M /dev/urandom > "$tmp/big"
cp "$tmp/big" "$mnt/big" || fail "write after growing to 2G"
unmount "$img"
run fsck.dhfs -n "$img"; [[ $rc -eq 0 ]] || fail "fsck after growing past 1 GiB: exit $rc: $out $err"
dhfs "$img" "$mnt"
for f in keep more big; do cmp "$tmp/$f" "$mnt/$f" || fail "$f differs after growing past 1 GiB"; done
[[ $(size_of) -eq $(( (2 << 30) - (16 << 20) - 4 * 4096 )) ]] || fail "size after 2G: $(size_of)"
unmount "$img"

# Read-only: nothing to grow.
dhfs "$img" "$mnt" -o ro
run dhfsctl grow "$mnt" --size 3G
expect_fail "grow of a read-only mount" "Read-only file system"
unmount "$img"
[[ $(stat -c %s "$img") -eq $((2 << 30)) ]] || fail "read-only grow changed the image"
rm -f "$img" "$tmp/big"

# ---- a block device (loop) whose backing file grows: dhfs cannot extend it
truncate -s 256M "$tmp/loop.img"
loop=$(losetup -f --show "$tmp/loop.img")
mkfs.dhfs -f "$loop" >/dev/null
dhfs "$loop" "$mnt"
cp "$tmp/keep" "$mnt/keep"
run dhfsctl grow "$mnt" --size 512M
expect_fail "grow past the block device" "the device is smaller than 512.0 MiB; grow it first"
truncate -s 512M "$tmp/loop.img"
losetup -c "$loop"
run dhfsctl grow "$mnt"
expect_ok "grow after losetup -c"
[[ $out == "$mnt: grown from 256.0 MiB to 512.0 MiB" ]] || fail "loop grow output: '$out'"
cp "$tmp/more" "$mnt/more" || fail "write after growing the loop device"
unmount "$loop"
run fsck.dhfs -n "$loop"; [[ $rc -eq 0 ]] || fail "fsck of the grown loop device: exit $rc: $out $err"
dhfs "$loop" "$mnt"
for f in keep more; do cmp "$tmp/$f" "$mnt/$f" || fail "$f differs on the grown loop device"; done
unmount "$loop"
losetup -d "$loop"
loop=

if [[ $failures -ne 0 ]]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "all grow checks passed"
