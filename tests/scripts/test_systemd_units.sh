#!/bin/bash
# The operations files of tools/systemd, checked as shipped:
#  - var-lib-docker.mount passes systemd-analyze verify (the name matches
#    Where=, every key is known) and orders itself before docker.service;
#  - the docker.service drop-in has known keys only and asks for the mount;
#  - the fstab.example line becomes, through systemd-fstab-generator, a mount
#    unit ordered before docker.service that requires the image's directory;
#  - that very line mounts dhfs through mount(8) and mount.fuse3, with
#    allow_other and noatime applied.
# Usage: test_systemd_units.sh BIN_DIR
set -euo pipefail

bin=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
here=$(cd "$(dirname "$0")/../.." && pwd)
units=$here/tools/systemd
for tool in mkfs.dhfs dhfs; do
  [[ -x $bin/$tool ]] || { echo "missing $bin/$tool" >&2; exit 1; }
done
generator=/lib/systemd/system-generators/systemd-fstab-generator
for x in /usr/bin/systemd-analyze "$generator"; do
  [[ -x $x ]] || { echo "FAIL: $x missing (Debian package systemd; tools/setup.sh test installs it)" >&2; exit 1; }
done

tmp=$(mktemp -d)
cleanup() {
  for m in $(grep -o " $tmp[^ ]*" /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# ---- the mount unit
mkdir -p "$tmp/units"
cp "$units/var-lib-docker.mount" "$tmp/units/"
out=$(systemd-analyze verify --man=no "$tmp/units/var-lib-docker.mount" 2>&1) || fail "verify var-lib-docker.mount: $out"
[[ -z $out ]] || fail "verify var-lib-docker.mount complains: $out"
grep -qx 'Before=docker.service containerd.service' "$units/var-lib-docker.mount" || fail "mount unit not ordered before docker.service"
grep -qx 'Where=/var/lib/docker' "$units/var-lib-docker.mount" || fail "mount unit Where="
grep -qx 'Type=fuse.dhfs' "$units/var-lib-docker.mount" || fail "mount unit Type="
# a broken unit must not pass: the check above can fail
sed 's|^Where=.*|Where=/var/lib/other|' "$units/var-lib-docker.mount" >"$tmp/units/var-lib-docker.mount"
systemd-analyze verify --man=no "$tmp/units/var-lib-docker.mount" >/dev/null 2>&1 && fail "verify accepted a unit whose name does not match Where="

# ---- the docker.service drop-in: its keys, verified on a minimal service
mkdir -p "$tmp/units2"
{ printf '[Service]\nExecStart=/bin/true\n'; cat "$units/docker.service.d/dhfs.conf"; } >"$tmp/units2/docker.service"
out=$(systemd-analyze verify --man=no "$tmp/units2/docker.service" 2>&1) || fail "verify the drop-in: $out"
[[ -z $out ]] || fail "verify the drop-in complains: $out"
grep -qx 'RequiresMountsFor=/var/lib/docker' "$units/docker.service.d/dhfs.conf" || fail "drop-in lacks RequiresMountsFor=/var/lib/docker"

# ---- the fstab line through systemd's generator
line=$(grep -v '^#' "$units/fstab.example" | grep .)
[[ $(wc -l <<<"$line") -eq 1 ]] || fail "fstab.example should hold exactly one line"
echo "$line" >"$tmp/fstab"
mkdir -p "$tmp/gen"
SYSTEMD_FSTAB=$tmp/fstab SYSTEMD_PROC_CMDLINE="" "$generator" "$tmp/gen" "$tmp/gen" "$tmp/gen" 2>"$tmp/gen.err" ||
  fail "fstab generator: $(cat "$tmp/gen.err")"
gen=$tmp/gen/var-lib-docker.mount
if [[ -f $gen ]]; then
  for want in 'Before=docker.service' 'RequiresMountsFor=/var/lib/dhfs' 'Type=fuse.dhfs' 'Where=/var/lib/docker'; do
    grep -qx "$want" "$gen" || fail "generated unit lacks '$want': $(cat "$gen")"
  done
  [[ -e $tmp/gen/local-fs.target.requires/var-lib-docker.mount ]] || fail "fstab line is not a local-fs mount"
else
  fail "the fstab generator made no var-lib-docker.mount"
fi

# ---- the same line through mount(8): the image and mount point replaced by
# this test's. mount.fuse3 runs "dhfs" from the standard PATH: in a private
# mount namespace a directory holding this build's dhfs is bound over
# /usr/local/sbin, so nothing outside the test changes.
read -r dev mp fstype opts rest <<<"$line"
[[ $dev == /var/lib/dhfs/docker.img && $mp == /var/lib/docker && $fstype == fuse.dhfs ]] ||
  fail "fstab.example fields: $dev $mp $fstype"
img=$tmp/docker.img mnt=$tmp/mnt
mkdir -p "$mnt" "$tmp/sbin"
"$bin/mkfs.dhfs" -s 256M "$img" >/dev/null
ln -s "$bin/dhfs" "$tmp/sbin/dhfs"
echo "$img $mnt $fstype $opts $rest" >"$tmp/fstab.mount"
set +e
unshare --mount --propagation private bash -euc '
  img=$1 mnt=$2 tmp=$3
  mount --bind "$tmp/sbin" /usr/local/sbin
  wait_gone() { for _ in $(seq 100); do pgrep -f "dhfs $img " >/dev/null || return 0; sleep 0.1; done; return 1; }
  mount -T "$tmp/fstab.mount" "$mnt" || { echo "mount through the fstab.example line failed"; exit 1; }
  ok=0
  m=$(grep " $mnt fuse.dhfs " /proc/mounts) || { echo "not mounted as fuse.dhfs"; exit 1; }
  [[ $m == *allow_other* ]] || { echo "allow_other not applied: $m"; ok=1; }
  [[ $m == *noatime* ]] || { echo "noatime not applied: $m"; ok=1; }
  echo data >"$mnt/f" && [[ $(cat "$mnt/f") == data ]] || { echo "write/read on the mount"; ok=1; }
  umount "$mnt"; wait_gone || { echo "dhfs still running after umount"; ok=1; }
  exit $ok
' _ "$img" "$mnt" "$tmp" >"$tmp/ns.out" 2>&1
ns_rc=$?
set -e
[[ $ns_rc -eq 0 ]] || fail "fstab.example through mount(8): $(cat "$tmp/ns.out")"

if [[ $failures -ne 0 ]]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "systemd mount unit, docker drop-in and fstab line: all checks passed"
