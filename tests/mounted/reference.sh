#!/bin/bash
# Runs the mounted test suite in reference mode against local filesystems, to
# check that its expectations are those of a real local filesystem.
#
#   tests/mounted/reference.sh BUILD/tests/dhfs_mounted_tests [ext4|tmpfs|xfs ...] [-- catch args]
#
# ext4 is made with -O ea_inode (64 KiB xattr values).  Known, legitimate
# differences from what dhfs must do: ext4 cannot hold 1000 xattrs on one inode
# ("1000 xattrs on one file"); XFS limits symlink targets to 1024 bytes and
# answers EEXIST instead of ENOTEMPTY when renaming over a non-empty directory.
# Needs root.
set -u
suite=$(realpath "$1"); shift
kinds=(); catch_args=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; catch_args=("$@"); break; fi
  kinds+=("$1"); shift
done
[ ${#kinds[@]} -gt 0 ] || kinds=(ext4 tmpfs)

work=$(mktemp -d /tmp/dhfs-reference-XXXXXX)
chmod 0755 "$work"  # the tests drop to uid 65534, which must reach the mount
loop=""
cleanup() {
  mountpoint -q "$work/mnt" && umount "$work/mnt"
  [ -n "$loop" ] && losetup -d "$loop"
  rm -rf "$work"
}
trap cleanup EXIT

status=0
for kind in "${kinds[@]}"; do
  mkdir -p "$work/mnt"
  case $kind in
    tmpfs) mount -t tmpfs -o size=8G tmpfs "$work/mnt" || exit 1 ;;
    ext4|xfs)
      truncate -s 8G "$work/image"
      if [ "$kind" = ext4 ]; then mkfs.ext4 -q -F -O ea_inode "$work/image"; else mkfs.xfs -q -f "$work/image"; fi
      loop=$(losetup -f --show "$work/image") || exit 1
      mount "$loop" "$work/mnt" || exit 1 ;;
    *) echo "unknown filesystem kind $kind" >&2; exit 2 ;;
  esac
  chmod 0755 "$work/mnt"
  echo "=== reference run on $kind"
  DHFS_TEST_REFERENCE_DIR="$work/mnt" "$suite" "${catch_args[@]}" || status=1
  umount "$work/mnt"
  [ -n "$loop" ] && { losetup -d "$loop"; loop=""; }
  rm -f "$work/image"
done
exit $status
