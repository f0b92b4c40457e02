#!/bin/bash
# Command-line behaviour of mkfs.dhfs and dhfs: refusing to overwrite,
# one-line errors and non-zero exits for bad images (not dhfs, truncated,
# corrupted superblock, checkpoint or journal), refusing a second mount or an
# fsck of a mounted device, ENOSPC on a full device, mount.fuse3 and fstab.
# Usage: test_mount_cli.sh BIN_DIR
set -euo pipefail

bin=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
for tool in mkfs.dhfs dhfs fsck.dhfs dhfsctl; do
  [[ -x $bin/$tool ]] || { echo "missing $bin/$tool" >&2; exit 1; }
done
export PATH="$bin:$PATH"  # mount.fuse3 finds dhfs through PATH

tmp=$(mktemp -d)
mnt=$tmp/mnt
mkdir -p "$mnt"
cleanup() {
  for m in $(grep -o " $tmp[^ ]*" /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
  pkill -f "dhfs $tmp/" 2>/dev/null || true
  for l in $(losetup -j "$tmp/ext4.img" -O NAME -n 2>/dev/null) $(losetup -j "$tmp/a.img" -O NAME -n 2>/dev/null); do
    losetup -d "$l" || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

source "$(dirname "$0")/cli_checks.sh"
mounted() { grep -q " $mnt fuse.dhfs " /proc/mounts; }

img=$tmp/a.img

# ---- every tool names its release (CMakeLists.txt) and the format version
release=$(sed -n 's/^project(dhfs VERSION \([0-9.]*\).*/\1/p' "$(dirname "$0")/../../CMakeLists.txt")
[[ -n $release ]] || fail "no project version in CMakeLists.txt"
for tool in mkfs.dhfs dhfs fsck.dhfs dhfsctl; do
  for opt in -V --version; do
    said=$("$tool" "$opt" 2>&1) || fail "$tool $opt: exit $?"
    [[ $said == "$tool $release (dhfs on-disk format 1)" ]] || fail "$tool $opt says: $said"
  done
done

# ---- mkfs.dhfs
run mkfs.dhfs "$img"; expect_fail "mkfs of a missing file without -s" "does not exist"
run mkfs.dhfs -s 12Q "$img"; expect_fail "mkfs with a bad size" "invalid size"
run mkfs.dhfs -s 1M "$img"; expect_fail "mkfs too small" "too small"
# The journal of an image file gets real space on its host: a host without
# room for it is refused at mkfs, and the half-made image is removed.
mkdir "$tmp/small-host"
mount -t tmpfs -o size=8m tmpfs "$tmp/small-host"
run mkfs.dhfs -s 1G "$tmp/small-host/big.img"
expect_fail "mkfs of an image whose host has no room for the journal" \
  "big.img: cannot reserve the 16 MiB of the journal on the filesystem that holds it: No space left on device"
[[ ! -e $tmp/small-host/big.img ]] || fail "mkfs left the image it could not format behind"
umount "$tmp/small-host"
run mkfs.dhfs -s 256M "$img"; expect_ok "mkfs -s 256M"
[[ $(stat -c %s "$img") -eq $((256 << 20)) ]] || fail "image size"
[[ $(stat -c %b "$img") -lt 65536 ]] || fail "image is not sparse"
run mkfs.dhfs "$img"; expect_fail "mkfs over dhfs without -f" "contains a dhfs filesystem; use -f"
run mkfs.dhfs -f "$img"; expect_ok "mkfs -f"
# mkfs discards what the data area held (holes in an image file); -K keeps it.
dd if=/dev/urandom of="$img" bs=1M count=100 seek=40 conv=notrunc,fsync status=none
run mkfs.dhfs -f -K "$img"; expect_ok "mkfs -f -K"
[[ $(stat -c %b "$img") -gt 200000 ]] || fail "mkfs -K discarded the old contents: $(stat -c %b "$img") blocks"
run mkfs.dhfs -f "$img"; expect_ok "mkfs -f over old contents"
[[ $(stat -c %b "$img") -lt 65536 ]] || fail "mkfs -f left the old contents allocated: $(stat -c %b "$img") blocks"
truncate -s 64M "$tmp/ext4.img"; mkfs.ext4 -q -F "$tmp/ext4.img"
run mkfs.dhfs "$tmp/ext4.img"; expect_fail "mkfs over ext4 without -f" "ext2/3/4 filesystem"

# ---- bad images are refused with one line
run dhfs "$tmp/ext4.img" "$mnt" -f; expect_fail "mount of ext4" "not a dhfs filesystem"
head -c 1024 /dev/zero > "$tmp/tiny"
run dhfs "$tmp/tiny" "$mnt" -f; expect_fail "mount of a tiny file" "not a dhfs filesystem"
truncate -s 64M "$tmp/zeros"
run dhfs "$tmp/zeros" "$mnt" -f; expect_fail "mount of zeros" "not a dhfs filesystem"
run dhfs "$tmp/nonexistent" "$mnt" -f; expect_fail "mount of a missing file" "No such file"
run dhfs "$img" "$tmp/nonexistent" -f; expect_fail "mount on a missing directory" "No such file"
run dhfs "$img" "$mnt" -f -o bogus_option; expect_fail "unknown option" "unknown mount option 'bogus_option'"
run dhfs "$img" "$mnt" -f -o fuse_uring=maybe; expect_fail "bad fuse_uring" "fuse_uring is 'on' or 'off'"
run dhfs "$img" "$mnt" -f -o ring_spin=1001; expect_fail "ring_spin too long" "ring_spin is 0 to 1000 microseconds"
run dhfs "$img" "$mnt" -f -o ring_spin=-5; expect_fail "negative ring_spin" "ring_spin is 0 to 1000 microseconds"
run dhfs "$img" "$mnt" -f -o ring_pin=sometimes; expect_fail "bad ring_pin" "ring_pin is 'auto', 'on' or 'off'"
run dhfs "$img" "$mnt" -f -o readahead=64K; expect_fail "read-ahead too small" "read-ahead must be between 128K and 256M"
run dhfs "$img" "$mnt" -f -o readahead=lots; expect_fail "read-ahead not a size" "read-ahead must be between 128K and 256M"
cp "$img" "$tmp/trunc.img"; truncate -s 128M "$tmp/trunc.img"
run dhfs "$tmp/trunc.img" "$mnt" -f; expect_fail "mount of a truncated image" "truncated"
cp "$img" "$tmp/sb.img"; printf 'XXXXXXXX' | dd of="$tmp/sb.img" bs=1 seek=100 conv=notrunc status=none
dhfs "$tmp/sb.img" "$mnt" 2>"$tmp/sb.err" && mounted || fail "primary superblock damaged: mount from the backup failed"
grep -q "superblock is damaged (superblock checksum mismatch); mounted with its backup from block 65535" "$tmp/sb.err" ||
  fail "the mount from the backup superblock did not say so: $(cat "$tmp/sb.err")"
mounted && unmount "$tmp/sb.img"
cp "$tmp/sb.img" "$tmp/sb2.img"; size=$(stat -c %s "$tmp/sb2.img")
printf 'XXXXXXXX' | dd of="$tmp/sb2.img" bs=1 seek=$((size - 4096 + 100)) conv=notrunc status=none
run dhfs "$tmp/sb2.img" "$mnt" -f; expect_fail "both superblocks damaged" "superblock is damaged"
mounted && fail "a damaged image got mounted"

# Journal damaged in the middle: several fsynced batches, then a crash.
cp "$img" "$tmp/j.img"
dhfs "$tmp/j.img" "$mnt"
for i in 1 2 3 4; do
  echo "$i" > "$mnt/f$i"
  dhfsctl sync "$mnt"
done
pkill -9 -f "dhfs $tmp/j.img "; wait_gone "$tmp/j.img"
# The dead mount stays until unmounted (stat of its root can still succeed
# from the kernel's cache). A new mount refuses to hide it and says what to do.
run timeout 20 dhfs "$tmp/j.img" "$mnt" -f
expect_fail "mount over the dead mount of a killed daemon" "$mnt: a FUSE filesystem whose daemon died is still mounted here; umount $mnt first"
umount -l "$mnt"
printf 'XXXXXXXXXXXXXXXX' | dd of="$tmp/j.img" bs=1 seek=$((3 * 4096 + 100)) conv=notrunc status=none
run timeout 20 dhfs "$tmp/j.img" "$mnt" -f; expect_fail "damaged journal" "journal damaged.*run fsck.dhfs"
run fsck.dhfs -y "$tmp/j.img"; [[ $rc -eq 1 ]] || fail "fsck -y of a damaged journal: exit $rc"
dhfs "$tmp/j.img" "$mnt" && mounted || fail "mount after fsck repaired the journal"
mounted && unmount "$tmp/j.img"

# ---- one device, one user
dhfs "$img" "$mnt"
mounted || fail "mount"
mkdir -p "$tmp/mnt2"
run dhfs "$img" "$tmp/mnt2" -f; expect_fail "second mount of a mounted image" "already mounted|in use"
run fsck.dhfs -n "$img"; [[ $rc -eq 8 ]] || fail "fsck of a mounted image: exit $rc"
[[ $err =~ "already mounted"|"in use" ]] || fail "fsck of a mounted image: '$err'"

# ---- ENOSPC on a full device, space back after delete
set +e
dd if=/dev/urandom of="$mnt/fill" bs=1M count=400 conv=fsync status=none 2>"$tmp/dd.err"
dd_rc=$?
set -e
[[ $dd_rc -ne 0 ]] && grep -q "No space left" "$tmp/dd.err" || fail "filling the device did not end in ENOSPC ($(cat "$tmp/dd.err"))"
avail_full=$(stat -f -c %a "$mnt")
echo small > "$mnt/after-full" 2>/dev/null || true
rm -f "$mnt/fill"
dhfsctl sync "$mnt"
avail_after=$(stat -f -c %a "$mnt")
[[ $avail_after -gt $((avail_full + 40000)) ]] || fail "space did not come back after delete ($avail_full -> $avail_after blocks)"
echo again > "$mnt/again" || fail "write after freeing space"
unmount "$img"
run fsck.dhfs -n "$img"; [[ $rc -eq 0 ]] || fail "fsck after ENOSPC: exit $rc: $out $err"

# ---- a write-protected medium is mounted read-only, with a warning, as
# mount(8) does: an image on a filesystem mounted read-only, and a
# read-only loop device.
expect_ro_mount() {  # WHAT SOURCE: $rc, $err of the dhfs run that mounted SOURCE
  expect_ok "$1"
  [[ $err == *"$2: write-protected, mounting read-only"* ]] || fail "$1: no warning: '$err'"
  grep " $mnt fuse.dhfs " /proc/mounts | grep -q " ro," || fail "$1: not mounted read-only: $(grep " $mnt " /proc/mounts)"
  [[ $(cat "$mnt/again" 2>/dev/null) == again ]] || fail "$1: contents"
  touch "$mnt/new" 2>/dev/null && fail "$1: a file was created"
  mounted && unmount "$2"
}
mkdir "$tmp/ro-host"
mount -t tmpfs -o size=300m tmpfs "$tmp/ro-host"
cp --sparse=always "$img" "$tmp/ro-host/ro.img"
mount -o remount,ro "$tmp/ro-host"
run dhfs "$tmp/ro-host/ro.img" "$mnt"
expect_ro_mount "image on a read-only filesystem" "$tmp/ro-host/ro.img"
umount "$tmp/ro-host"
roloop=$(losetup -r -f --show "$img")
run dhfs "$roloop" "$mnt"
expect_ro_mount "read-only loop device" "$roloop"
losetup -d "$roloop"

# ---- mount(8) through mount.fuse3, and an fstab line. mount.fuse3 runs
# "dhfs" from the standard PATH (/usr/local/sbin, ...): in a private mount
# namespace, a directory holding this build's dhfs is bound over
# /usr/local/sbin, so nothing outside the test changes.
echo "$img $mnt fuse.dhfs defaults,allow_other,noatime,nodev,nosuid,_netdev 0 0" > "$tmp/fstab"
mkdir -p "$tmp/sbin"
ln -s "$bin/dhfs" "$tmp/sbin/dhfs"
set +e
unshare --mount --propagation private bash -euc '
  img=$1 mnt=$2 tmp=$3
  mount --bind "$tmp/sbin" /usr/local/sbin
  wait_gone() { for _ in $(seq 100); do pgrep -f "dhfs $img " >/dev/null || return 0; sleep 0.1; done; return 1; }
  mount -t fuse.dhfs "$img" "$mnt" -o allow_other || { echo "mount -t fuse.dhfs failed"; exit 1; }
  [[ $(cat "$mnt/again") == again ]] || { echo "content after mount -t fuse.dhfs"; umount "$mnt"; exit 1; }
  umount "$mnt"; wait_gone
  mount -T "$tmp/fstab" "$mnt" || { echo "mount through an fstab line failed"; exit 1; }
  ok=0
  grep " $mnt fuse.dhfs " /proc/mounts | grep -q noatime || { echo "noatime not applied from fstab"; ok=1; }
  umount "$mnt"; wait_gone
  exit $ok
' _ "$img" "$mnt" "$tmp" >"$tmp/ns.out" 2>&1
ns_rc=$?
set -e
[[ $ns_rc -eq 0 ]] || fail "mount.fuse3/fstab: $(cat "$tmp/ns.out")"

if [[ $failures -ne 0 ]]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "all mount/mkfs command-line checks passed"
