#!/usr/bin/env bash
# dhfs set-up, as root on Debian 12:
#   tools/setup.sh          install what is missing, build, install the tools
#                           to /usr/local/sbin, format the default image and
#                           mount it (see the defaults below)
#   tools/setup.sh test     install what is missing, build (release,
#                           ASan/UBSan and the clang libFuzzer build) and
#                           run every test, with a short run of every fuzz
#                           target (ctest label fuzz)
# Defaults can be changed through the environment:
#   DHFS_IMAGE=/var/lib/dhfs/dhfs.img DHFS_SIZE=8G DHFS_MOUNT=/mnt/dhfs
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-mount}
image=${DHFS_IMAGE:-/var/lib/dhfs/dhfs.img}
size=${DHFS_SIZE:-8G}
mountpoint=${DHFS_MOUNT:-/mnt/dhfs}
jobs=$(nproc)

build_deps=(build-essential cmake pkg-config libfuse3-dev fuse3 liburing-dev libxxhash-dev
            libboost-dev libboost-container-dev libfmt-dev catch2)
# Tests and benchmarks: filesystems to compare with, fio, xattr tools; docker
# (tests/docker, bench/docker_bench.py: dockerd is started by the test with
# its own sockets and directories; the package's docker.service is not used;
# systemd only for systemd-analyze and the fstab generator, tests/scripts);
# clang and its runtime libraries (libFuzzer, sanitizers) for tests/fuzz.
test_deps=(e2fsprogs xfsprogs btrfs-progs util-linux attr fio fuse-overlayfs python3 gnuplot-nox
           docker.io docker-registry busybox-static systemd clang libclang-rt-14-dev)

die() { echo "setup: $*" >&2; exit 1; }

install_missing() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not start their services (docker.io would start dockerd
  # and containerd): a policy-rc.d that denies every start, for the install
  # only, unless the machine has one already.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; own_policy=1
  fi
  local rc=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
  [ "$own_policy" -eq 0 ] || rm -f "$policy"
  [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed"
}

build() {  # build DIR TARGET [cmake args...]   (TARGET "all": everything)
  local dir=$1 target=$2; shift 2
  cmake -S "$here" -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j"$jobs" --target "$target"
}

build_fuzz() {  # the libFuzzer targets (clang only), in their own build dir
  local dir=$here/build/fuzz
  CC=clang CXX=clang++ cmake -S "$here" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDHFS_FUZZ=ON -DDHFS_BUILD_TESTS=OFF >/dev/null
  cmake --build "$dir" -j"$jobs" --target dhfs_fuzzers  # not the tools: only the fuzzers run here
}

[ "$(id -u)" -eq 0 ] || die "run as root (mounting, loop devices and apt-get need it)"

case "$mode" in
  mount)
    install_missing "${build_deps[@]}"
    build "$here/build/release" all -DCMAKE_BUILD_TYPE=Release -DDHFS_BUILD_TESTS=OFF
    # Installed to /usr/local/sbin, where mount(8) and fstab lines find dhfs.
    cmake --install "$here/build/release" --prefix /usr/local >/dev/null
    bin=/usr/local/sbin
    if mountpoint -q "$mountpoint"; then
      echo "setup: $mountpoint is already mounted"; exit 0
    fi
    mkdir -p "$(dirname "$image")" "$mountpoint"
    if [ ! -e "$image" ]; then
      "$bin/mkfs.dhfs" -s "$size" "$image"
    fi
    "$bin/dhfs" "$image" "$mountpoint" -o allow_other
    echo "setup: dhfs on $image is mounted at $mountpoint (unmount with: umount $mountpoint)"
    ;;
  test)
    install_missing "${build_deps[@]}" "${test_deps[@]}"
    modprobe fuse 2>/dev/null || true
    build "$here/build/release" all -DCMAKE_BUILD_TYPE=Release
    # Only the unit tests run under the sanitizers: the daemon and the
    # mounted tests are not built there (about 3 minutes of CI).
    build "$here/build/asan" dhfs_unit_tests -DCMAKE_BUILD_TYPE=Debug -DDHFS_SANITIZE=ON
    build_fuzz
    echo "setup: unit tests under ASan/UBSan"
    ctest --test-dir "$here/build/asan" -L unit --output-on-failure -j"$jobs"
    echo "setup: fuzz targets, a short run each (ASan/UBSan)"
    ctest --test-dir "$here/build/fuzz" -L fuzz --output-on-failure
    echo "setup: all tests, release build"
    # -j: the unit tests run side by side; everything that mounts is RUN_SERIAL.
    ctest --test-dir "$here/build/release" --output-on-failure --timeout 900 -j"$jobs"
    ;;
  *)
    die "unknown mode '$mode' (use: tools/setup.sh [mount|test])"
    ;;
esac
