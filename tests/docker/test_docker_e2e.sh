#!/bin/bash
# dockerd on dhfs, overlay2 storage driver, end to end.
#
# Formats an image file, mounts it with dhfs and runs Debian's dockerd (its
# own socket, exec-root, pidfile and config file; its own managed containerd)
# with --data-root on the mount and --storage-driver=overlay2. Then: imports
# a busybox base image, builds two images whose RUN steps add, modify and
# delete files, runs containers that write new files, copy up image files and
# delete image files (whiteouts, opaque directories), share a named volume,
# run a process as another uid, commits one of them,
# pushes to and pulls from a local registry (Debian's docker-registry on
# 127.0.0.1), checks that files copied into a third image are stored once
# (dedup), that every layer directory overlay2/<id> is its own dhfs region, restarts dockerd across an unmount/fsck/remount,
# grows the filesystem under a running container (dhfsctl grow), and checks that
# rm/rmi/prune give the space back, and fstrim gives it back to the image's host.
#
# Every expected file listing is computed on the host from a model directory
# (the base rootfs with the same changes applied by host commands) with the
# same busybox probe that runs inside the containers.
#
# Needs root, /dev/fuse, kernel overlayfs and the Debian packages docker.io,
# docker-registry and busybox-static (tools/setup.sh test installs them);
# without them it fails, it does not skip.
# Usage: test_docker_e2e.sh BIN_DIR
set -euo pipefail

bin=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
for tool in mkfs.dhfs dhfs fsck.dhfs dhfsctl; do
  [[ -x $bin/$tool ]] || { echo "FAIL: missing $bin/$tool" >&2; exit 1; }
done

# Debian's binaries by full path: a docker CLI elsewhere in PATH (e.g.
# /usr/local/bin) must not be picked up instead.
DOCKER=/usr/bin/docker
DOCKERD=/usr/sbin/dockerd
REGISTRY=/usr/bin/docker-registry
BUSYBOX=/bin/busybox
for pkg in docker.io docker-registry busybox-static; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" ||
    { echo "FAIL: Debian package $pkg is not installed (tools/setup.sh test installs it)" >&2; exit 1; }
done
for x in "$DOCKER" "$DOCKERD" "$REGISTRY" "$BUSYBOX"; do
  [[ -x $x ]] || { echo "FAIL: $x missing" >&2; exit 1; }
done
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || { echo "FAIL: the kernel has no overlayfs" >&2; exit 1; }

# Short path: unix sockets (containerd's under exec-root) have a 108-byte limit.
tmp=$(mktemp -d /tmp/dhfs-docker.XXXXXX)
img=$tmp/dhfs.img
mnt=$tmp/mnt
root=$mnt/docker
mkdir -p "$mnt" "$tmp/exec" "$tmp/cli" "$tmp/registry"

# dockerd creates /run/docker/plugins whatever its exec-root: removed again
# (if empty) unless it was there before.
had_run_docker=0
[[ -e /run/docker ]] && had_run_docker=1
dhfs_pid=""
dockerd_pid=""
registry_pid=""
t0=$SECONDS

log() { printf '[%3ds] %s\n' $((SECONDS - t0)) "$*"; }

# pids of the processes whose command line names this test's exec-root:
# dockerd's managed containerd and the container shims (only those this
# test started can match).
our_pids() {
  local p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF "$tmp/exec/" && echo "${p#/proc/}"
  done
  return 0
}

stop_pid() {  # stop_pid PID SECONDS: SIGTERM, then SIGKILL after SECONDS
  local pid=$1 i
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < $2 * 10; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  if [[ $rc -ne 0 ]]; then
    echo "---- last lines of the dockerd log" >&2
    tail -n 30 "$tmp/dockerd.log" >&2 2>/dev/null
    echo "---- dhfs log" >&2
    tail -n 20 "$tmp/dhfs.log" >&2 2>/dev/null
  fi
  stop_pid "$dockerd_pid" 20
  stop_pid "$registry_pid" 5
  for p in $(our_pids); do stop_pid "$p" 5; done
  for m in $(grep -o " $tmp[^ ]*" /proc/mounts | sort -r); do umount "$m" 2>/dev/null || umount -l "$m"; done
  if [[ -n $dhfs_pid ]]; then
    for _ in $(seq 100); do kill -0 "$dhfs_pid" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$dhfs_pid" 2
  fi
  for l in $(losetup -j "$img" -O NAME -n 2>/dev/null); do losetup -d "$l"; done
  rm -rf "$tmp"
  [[ $had_run_docker -eq 1 ]] || rmdir /run/docker/plugins /run/docker 2>/dev/null
  exit $rc
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP  # through the EXIT trap

die() { echo "FAIL: $*" >&2; exit 1; }

# The docker CLI talks to this test's daemon only, keeps its config here,
# and uses the classic builder (no buildx in docker.io).
export DOCKER_HOST=unix://$tmp/docker.sock DOCKER_CONFIG=$tmp/cli DOCKER_BUILDKIT=0
d() { timeout 120 "$DOCKER" "$@"; }

mount_dhfs() {
  "$bin/dhfs" "$img" "$mnt" -f -o allow_other >>"$tmp/dhfs.log" 2>&1 &
  dhfs_pid=$!
  for _ in $(seq 100); do
    grep -q " $mnt fuse.dhfs " /proc/mounts && return 0
    kill -0 "$dhfs_pid" 2>/dev/null || break
    sleep 0.1
  done
  die "dhfs did not mount $img on $mnt"
}

unmount_dhfs() {
  umount "$mnt" || die "umount $mnt (busy?)"
  for _ in $(seq 300); do kill -0 "$dhfs_pid" 2>/dev/null || { wait "$dhfs_pid" || die "dhfs exited with an error"; dhfs_pid=""; return 0; }; sleep 0.1; done
  die "dhfs daemon still running 30 s after the unmount"
}

# No /etc/docker/daemon.json, no /etc/docker/key.json: everything of this
# daemon lives under $tmp.
printf '{"deprecated-key-path": "%s"}\n' "$tmp/key.json" >"$tmp/daemon.json"

start_dockerd() {
  "$DOCKERD" --config-file "$tmp/daemon.json" --data-root "$root" --exec-root "$tmp/exec" \
    --pidfile "$tmp/docker.pid" -H "unix://$tmp/docker.sock" --iptables=false --ip-masq=false \
    --bridge=none --storage-driver=overlay2 >>"$tmp/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 600); do
    kill -0 "$dockerd_pid" 2>/dev/null || die "dockerd exited during start-up"
    timeout 5 "$DOCKER" version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "dockerd did not answer on $tmp/docker.sock within 60 s"
}

stop_dockerd() {
  local containerd_pid
  containerd_pid=$(cat "$tmp/exec/containerd/containerd.pid" 2>/dev/null || true)
  kill -TERM "$dockerd_pid"
  for _ in $(seq 600); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$dockerd_pid" 2>/dev/null && die "dockerd did not stop within 60 s"
  wait "$dockerd_pid" || true
  dockerd_pid=""
  # dockerd stops its managed containerd on the way out
  if [[ -n $containerd_pid ]]; then
    for _ in $(seq 200); do kill -0 "$containerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$containerd_pid" 2>/dev/null && die "containerd ($containerd_pid) still running after dockerd stopped"
  fi
  [[ -z $(our_pids) ]] || die "processes of this test still running after dockerd stopped: $(our_pids)"
}

# Bytes in use on the dhfs, after making frees durable (freed extents are
# reused, and counted free, once the free is committed).
used_bytes() {
  "$bin/dhfsctl" sync "$mnt"
  "$bin/dhfsctl" --json df "$mnt" | python3 -c 'import json, sys; print(json.load(sys.stdin)["used_bytes"])'
}
mib() { echo "$(($1 / 1048576)) MiB"; }

# ------------------------------------------------------------------ set-up
log "mkfs.dhfs, mount, start dockerd"
"$bin/mkfs.dhfs" -s 4G "$img" >/dev/null
mount_dhfs
start_dockerd

info=$(d info --format '{{.Driver}}|{{.DockerRootDir}}|{{json .DriverStatus}}')
log "docker info: $info"
[[ ${info%%|*} == overlay2 ]] || die "docker info: storage driver is not overlay2: $info"
rest=${info#*|}
[[ ${rest%%|*} == "$root" ]] || die "docker info: root dir is not $root: $info"
[[ $info == *'["Backing Filesystem","fuse"]'* ]] || die "docker info: backing filesystem is not fuse: $info"
[[ $info == *'["Supports d_type","true"]'* ]] || die "docker info: no d_type support: $info"
# (dockerd bind-mounts its data-root onto itself: compare devices)
[[ $(findmnt -n -o FSTYPE -T "$root") == fuse.dhfs && $(stat -c %d "$root") == $(stat -c %d "$mnt") ]] ||
  die "$root is not on the dhfs mount: $(findmnt -T "$root")"
[[ -d $root/overlay2 ]] || die "no $root/overlay2"
base_used=$(used_bytes)
log "dhfs used after dockerd start: $(mib "$base_used")"

# ------------------------------------------------------------- base image
# A tiny rootfs: busybox-static with one symlink per applet, plus test files.
rootfs=$tmp/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,root,t/tree,t/keep}
chmod 1777 "$rootfs/tmp"
cp "$BUSYBOX" "$rootfs/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
done
echo "base v1" >"$rootfs/t/base.txt"
echo "doomed" >"$rootfs/t/gone.txt"
echo one >"$rootfs/t/tree/one.txt"
echo two >"$rootfs/t/tree/two.txt"
echo kept >"$rootfs/t/keep/k.txt"
log "docker import of the busybox rootfs"
tar -C "$rootfs" -c . | d import - dhfs-e2e/base:1 >/dev/null

# The probe lists t, data, opt and bin with a short hash of every file; it
# runs with busybox's applets in the container and on the model directories.
probe='for p in $(find t data opt bin 2>/dev/null | sort); do
  if [ -L "$p" ]; then echo "L $p -> $(readlink "$p")"
  elif [ -d "$p" ]; then echo "D $p"
  else echo "F $p $(sha256sum <"$p" | cut -c1-16) $(stat -c %s "$p")"; fi
done'
model_probe() { (cd "$1" && PATH=$rootfs/bin busybox sh -c "$probe"); }
run_probe() { d run --rm --network none "$1" sh -c "cd / && $probe"; }
expect_same() {  # expect_same WHAT EXPECTED ACTUAL
  if [[ "$2" != "$3" ]]; then
    diff <(echo "$2") <(echo "$3") | head -20 >&2 || true
    die "$1: content differs from the model (diff above: < expected, > found)"
  fi
}

model_base=$tmp/model-base
cp -a "$rootfs" "$model_base"
expect_same "base image" "$(model_probe "$model_base")" "$(run_probe dhfs-e2e/base:1)"

# ------------------------------------------------------------- two builds
ctx_a=$tmp/ctx-a ctx_b=$tmp/ctx-b
mkdir -p "$ctx_a" "$ctx_b"
head -c $((4 << 20)) /dev/urandom >"$ctx_a/payload.bin"
echo "from context a" >"$ctx_a/small.txt"
head -c $((8 << 20)) /dev/urandom >"$ctx_b/big.bin"
cat >"$ctx_a/Dockerfile" <<'EOF'
FROM dhfs-e2e/base:1
COPY payload.bin small.txt /data/
RUN echo "changed by a" > /t/base.txt && rm /t/gone.txt && echo "run a" > /data/run.txt \
 && rm -rf /t/tree && mkdir /t/tree && echo fresh > /t/tree/only.txt
RUN rm /data/small.txt && echo second > /data/second.txt && rm /bin/vi \
 && head -c 100000 /data/payload.bin > /data/head.bin
EOF
cat >"$ctx_b/Dockerfile" <<'EOF'
FROM dhfs-e2e/base:1
COPY big.bin /opt/
RUN echo "b was here" >> /t/base.txt && rm -rf /t/keep && ln -s /opt/big.bin /opt/link \
 && mkdir /opt/empty && rm /bin/sed && dd if=/opt/big.bin of=/opt/big.bin bs=4096 seek=100 count=3 conv=notrunc skip=7
EOF
log "docker build a and b"
d build --network none -q -t dhfs-e2e/a:1 "$ctx_a" >/dev/null
d build --network none -q -t dhfs-e2e/b:1 "$ctx_b" >/dev/null

model_a=$tmp/model-a
cp -a "$model_base" "$model_a"
mkdir -p "$model_a/data"
cp "$ctx_a/payload.bin" "$ctx_a/small.txt" "$model_a/data/"
echo "changed by a" >"$model_a/t/base.txt"; rm "$model_a/t/gone.txt"; echo "run a" >"$model_a/data/run.txt"
rm -rf "$model_a/t/tree"; mkdir "$model_a/t/tree"; echo fresh >"$model_a/t/tree/only.txt"
rm "$model_a/data/small.txt"; echo second >"$model_a/data/second.txt"; rm "$model_a/bin/vi"
head -c 100000 "$model_a/data/payload.bin" >"$model_a/data/head.bin"
expect_same "image a" "$(model_probe "$model_a")" "$(run_probe dhfs-e2e/a:1)"

model_b=$tmp/model-b
cp -a "$model_base" "$model_b"
mkdir -p "$model_b/opt"
cp "$ctx_b/big.bin" "$model_b/opt/"
echo "b was here" >>"$model_b/t/base.txt"; rm -rf "$model_b/t/keep"; ln -s /opt/big.bin "$model_b/opt/link"
mkdir "$model_b/opt/empty"; rm "$model_b/bin/sed"
dd if="$ctx_b/big.bin" of="$model_b/opt/big.bin" bs=4096 seek=100 count=3 conv=notrunc skip=7 status=none
expect_same "image b" "$(model_probe "$model_b")" "$(run_probe dhfs-e2e/b:1)"

# ------------------------------------------------------------- dedup
# A third image, built on its own, COPYs the same 12 MiB that a and b copied:
# docker writes every layer's files anew, and dhfs stores their contents once
# (dedup when the daemon handles each file's release, shortly after close).
physical_bytes() {
  "$bin/dhfsctl" sync "$mnt"
  "$bin/dhfsctl" --json df "$mnt" | python3 -c 'import json, sys; print(json.load(sys.stdin)["physical_bytes"])'
}
ctx_c=$tmp/ctx-c
mkdir -p "$ctx_c"
cp "$ctx_a/payload.bin" "$ctx_b/big.bin" "$ctx_c/"
printf 'FROM dhfs-e2e/base:1\nCOPY payload.bin big.bin /copies/\n' >"$ctx_c/Dockerfile"
log "docker build c (copies of a's and b's files): dedup"
physical_before=$(physical_bytes)
d build --network none -q -t dhfs-e2e/c:1 "$ctx_c" >/dev/null
for _ in $(seq 100); do
  grown=$(($(physical_bytes) - physical_before))
  ((grown < 2 << 20)) && break
  sleep 0.2
done
((grown < 2 << 20)) || die "image c's 12 MiB of copies took $(mib "$grown") of new space (dedup expected < 2 MiB)"
log "image c grew the physical data by $((grown / 1024)) KiB for 12 MiB of copied files"
want_sums=$(cd "$ctx_c" && md5sum payload.bin big.bin | cut -d' ' -f1)
got_sums=$(d run --rm --network none dhfs-e2e/c:1 md5sum /copies/payload.bin /copies/big.bin | cut -d' ' -f1)
expect_same "image c's copies" "$want_sums" "$got_sums"
d rmi -f dhfs-e2e/c:1 >/dev/null

# ------------------------------------------------------------- containers
# c1 writes new files, copies up image files (a 4 MiB one and a small one),
# deletes an image file and an image directory, once; later starts only probe.
c1_script='if [ ! -e /t/c1-done ]; then
  echo c1-new > /t/c1-new.txt
  echo c1-append >> /data/payload.bin
  echo c1 > /t/base.txt
  rm /t/tree/only.txt
  rm -rf /t/keep
  mkdir -p /t/keep/sub && echo again > /t/keep/sub/x.txt
  head -c 2097152 /data/payload.bin > /data/c1.bin
  touch /t/c1-done
fi
cd / && '"$probe"
model_c1=$tmp/model-c1
cp -a "$model_a" "$model_c1"
(
  cd "$model_c1"
  echo c1-new >t/c1-new.txt; echo c1-append >>data/payload.bin; echo c1 >t/base.txt; rm t/tree/only.txt
  rm -rf t/keep; mkdir -p t/keep/sub; echo again >t/keep/sub/x.txt
  head -c 2097152 data/payload.bin >data/c1.bin; touch t/c1-done
)
log "containers: writes, copy-ups, whiteouts"
expect_same "container c1" "$(model_probe "$model_c1")" "$(d run --network none --name c1 dhfs-e2e/a:1 sh -c "$c1_script")"
changes=$(d diff c1 | sort)
for want in "A /t/c1-new.txt" "C /data/payload.bin" "D /t/tree/only.txt" "A /data/c1.bin" "C /t/base.txt"; do
  grep -qxF "$want" <<<"$changes" || die "docker diff c1 lacks '$want': $changes"
done
[[ $(d cp c1:/t/c1-new.txt - | tar -xO) == c1-new ]] || die "docker cp c1:/t/c1-new.txt"
# The image is unchanged in a fresh container, and c2 on b works beside c1.
expect_same "image a after c1" "$(model_probe "$model_a")" "$(run_probe dhfs-e2e/a:1)"
d run --network none --name c2 dhfs-e2e/b:1 sh -c 'echo c2 > /opt/c2.txt && rm /opt/big.bin && cat /opt/c2.txt' >"$tmp/c2.out"
[[ $(cat "$tmp/c2.out") == c2 ]] || die "container c2 output: $(cat "$tmp/c2.out")"
expect_same "image b after c2" "$(model_probe "$model_b")" "$(run_probe dhfs-e2e/b:1)"

# A named volume (volumes/<name>/_data on dhfs) written by one container and
# read by another; a process of another uid writing into the container.
d volume create dhfs-e2e-vol >/dev/null
d run --rm --network none -v dhfs-e2e-vol:/vol dhfs-e2e/a:1 sh -c 'cp /data/payload.bin /vol/p && echo vol > /vol/v.txt'
vol_out=$(d run --rm --network none -v dhfs-e2e-vol:/vol dhfs-e2e/base:1 sh -c 'sha256sum < /vol/p; cat /vol/v.txt')
[[ $vol_out == "$(sha256sum <"$ctx_a/payload.bin")"$'\n'vol ]] || die "named volume content: $vol_out"
user_out=$(d run --rm --network none --user 1000:1000 dhfs-e2e/a:1 sh -c 'echo u > /tmp/u && cat /tmp/u /t/base.txt && id -u')
[[ $user_out == $'u\nchanged by a\n1000' ]] || die "container process as uid 1000: $user_out"

log "docker commit c1"
d commit c1 dhfs-e2e/c1:committed >/dev/null
expect_same "committed c1" "$(model_probe "$model_c1")" "$(run_probe dhfs-e2e/c1:committed)"

# ------------------------------------------------------------- regions
# Every layer directory overlay2/<id> (image layers, container layers and
# their -init layers) is the root of its own region, and a file a container
# wrote allocates from its container's region.
layer_dirs() {
  local obj
  for obj in "$@"; do
    d inspect -f '{{json .GraphDriver.Data}}' "$obj"
  done | python3 -c '
import json, os, sys
dirs = set()
for line in sys.stdin:
    data = json.loads(line)
    for key in ("LowerDir", "UpperDir"):
        for p in (data.get(key) or "").split(":"):
            if p:
                dirs.add(os.path.dirname(p))
print("\n".join(sorted(dirs)))'
}
dirs=$(layer_dirs dhfs-e2e/a:1 dhfs-e2e/b:1 dhfs-e2e/c1:committed c1 c2)
ndirs=$(wc -l <<<"$dirs")
echo "$dirs" >"$tmp/layer-dirs"
"$bin/dhfsctl" --json regions "$mnt" >"$tmp/regions.json"
python3 - "$tmp/regions.json" "$mnt" "$root/overlay2" "$tmp/layer-dirs" <<'EOF' || die "regions check failed"
import json, sys
regions, mnt, overlay = json.load(open(sys.argv[1]))["regions"], sys.argv[2], sys.argv[3]
by_root = {mnt + r["root"]: r for r in regions}
dirs = [l.strip() for l in open(sys.argv[4]) if l.strip()]
bad = 0
for d in dirs:
    if not d.startswith(overlay + "/"):
        print("layer directory %s is not under %s" % (d, overlay)); bad += 1
    elif d not in by_root:
        print("layer directory %s is not a region root" % d); bad += 1
for r in regions:  # docker's image metadata (image/overlay2/*) is no region
    if (mnt + r["root"]).startswith(overlay.rsplit("/", 1)[0] + "/image/"):
        print("docker metadata directory %s is a region" % r["root"]); bad += 1
ids = [by_root[d]["id"] for d in dirs if d in by_root]
if len(set(ids)) != len(ids):
    print("layer directories share regions: %s" % ids); bad += 1
sys.exit(1 if bad else 0)
EOF
c1_upper=$(d inspect -f '{{.GraphDriver.Data.UpperDir}}' c1)
c1_region=$("$bin/dhfsctl" --json region show "$(dirname "$c1_upper")" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
c1_file_region=$("$bin/dhfsctl" --json frag "$c1_upper/t/c1-new.txt" | python3 -c 'import json, sys; print(json.load(sys.stdin)["region"])')
[[ $c1_region == "$c1_file_region" ]] || die "c1's new file is in region $c1_file_region, c1's layer is region $c1_region"
log "regions: $ndirs layer directories, each its own region; c1's files in region $c1_region"

# ------------------------------------------------------------- registry
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $tmp/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
"$REGISTRY" serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
registry_pid=$!
python3 - "$port" <<'EOF' || die "the registry did not answer on 127.0.0.1:$port ($(cat "$tmp/registry.log"))"
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen("http://127.0.0.1:%s/v2/" % sys.argv[1], timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit(1)
EOF
reg=127.0.0.1:$port
log "push a, b and the committed c1 to $reg, remove b, pull it back"
for i in a:1 b:1 c1:committed; do
  d tag "dhfs-e2e/$i" "$reg/dhfs-e2e/$i"
  d push -q "$reg/dhfs-e2e/$i" >/dev/null
done
# Once c2 is gone b has no dependants: removing both tags deletes its
# layers from dhfs.
d rm c2 >/dev/null
d rmi dhfs-e2e/b:1 "$reg/dhfs-e2e/b:1" >/dev/null
d image inspect "$reg/dhfs-e2e/b:1" >/dev/null 2>&1 && die "b still present after rmi"
pull_out=$(d pull "$reg/dhfs-e2e/b:1")
grep -q "Pull complete" <<<"$pull_out" || die "pull of b downloaded nothing: $pull_out"
expect_same "b pulled from the registry" "$(model_probe "$model_b")" "$(run_probe "$reg/dhfs-e2e/b:1")"

peak_used=$(used_bytes)
log "dhfs used at the peak: $(mib "$peak_used")"

# ------------------------------------------------------------- restart
log "stop dockerd, unmount, fsck, remount, start dockerd"
stop_dockerd
unmount_dhfs
"$bin/fsck.dhfs" -n "$img" >"$tmp/fsck.out" 2>&1 || die "fsck.dhfs -n after docker use: $(cat "$tmp/fsck.out")"
mount_dhfs
start_dockerd
for i in dhfs-e2e/base:1 dhfs-e2e/a:1 dhfs-e2e/c1:committed "$reg/dhfs-e2e/b:1"; do
  d image inspect "$i" >/dev/null || die "image $i lost across the restart"
done
expect_same "image a after the restart" "$(model_probe "$model_a")" "$(run_probe dhfs-e2e/a:1)"
expect_same "b after the restart" "$(model_probe "$model_b")" "$(run_probe "$reg/dhfs-e2e/b:1")"
[[ $(d inspect -f '{{.State.Status}}' c1) == exited ]] || die "c1 is not a stopped container after the restart"
[[ $(d cp c1:/data/c1.bin - | tar -xO | sha256sum) == $(sha256sum <"$model_c1/data/c1.bin") ]] ||
  die "docker cp c1:/data/c1.bin after the restart"
expect_same "c1 started again after the restart" "$(model_probe "$model_c1")" "$(d start -a c1)"

# ------------------------------------------------------------- grow
# The data-root fills up: it grows while dockerd and a container run, and
# the container writes into the new space at once.
log "dhfsctl grow from 4 GiB to 5 GiB under a running container"
d run -d --name grower dhfs-e2e/a:1 sleep 600 >/dev/null
"$bin/dhfsctl" grow "$mnt" --size 5G >"$tmp/grow.out" 2>&1 || die "dhfsctl grow: $(cat "$tmp/grow.out")"
[[ $(stat -c %s "$img") -eq $((5 << 30)) ]] || die "the image file was not extended to 5 GiB: $(stat -c %s "$img")"
size_after=$("$bin/dhfsctl" --json df "$mnt" | python3 -c 'import json, sys; print(json.load(sys.stdin)["size_bytes"])')
# The data area: all but the superblocks, root slots and the 64 MiB journal
# mkfs gave the 4 GiB image (it keeps that size).
((size_after == (5 << 30) - (64 << 20) - 4 * 4096)) || die "dhfsctl df after the grow: size $size_after bytes"
d exec grower sh -c 'head -c 33554432 /dev/urandom > /after-grow.bin && sync' || die "write in the container after the grow"
[[ $(d exec grower sh -c 'wc -c < /after-grow.bin') -eq 33554432 ]] || die "the container's file after the grow"
d rm -f grower >/dev/null

# ------------------------------------------------------------- space back
log "docker rm, rmi, system prune -af"
d rm c1 >/dev/null
d volume rm dhfs-e2e-vol >/dev/null
# children before parents (docker refuses to delete a parent image first)
d rmi dhfs-e2e/c1:committed "$reg/dhfs-e2e/c1:committed" dhfs-e2e/a:1 "$reg/dhfs-e2e/a:1" \
  "$reg/dhfs-e2e/b:1" dhfs-e2e/base:1 >/dev/null
d system prune -af >/dev/null
[[ -z $(d images -aq) ]] || die "images left after prune: $(d images -a)"
[[ -z $(ls "$root/overlay2" | grep -vx l) ]] || die "layer directories left after prune: $(ls "$root/overlay2")"
end_used=$(used_bytes)
# Slack: what dockerd itself keeps after a prune (image/layer databases,
# buildkit and containerd metadata, network state) varies by a few hundred
# KiB; 4 MiB is far below the payload that the images held.
slack=$((4 << 20))
log "dhfs used: start $(mib "$base_used"), peak $(mib "$peak_used"), after prune $(mib "$end_used") (slack $(mib $slack))"
# The images hold 12 MiB of distinct random bytes (payload.bin 4 MiB,
# big.bin 8 MiB); everything else is copies of them, which dedup stores once.
((peak_used > base_used + (12 << 20))) || die "peak usage $(mib "$peak_used") is not above the start $(mib "$base_used") by the 12 MiB of payload"
((end_used <= base_used + slack)) ||
  die "space did not come back: $end_used bytes used after prune, $base_used at the start (slack $slack)"
leftover=$("$bin/dhfsctl" --json regions "$mnt" | python3 -c '
import json, sys
print(" ".join(r["root"] for r in json.load(sys.stdin)["regions"] if r["root"].startswith("/docker/overlay2/")))')
[[ -z $leftover ]] || die "regions of removed layers left: $leftover"
# ... and back to the filesystem that holds the image file: fstrim punches
# what dhfs has free out of it.
host_bytes() { echo $(($(stat -c '%b * %B' "$img"))); }
host_before=$(host_bytes)
fstrim "$mnt" || die "fstrim $mnt failed"
host_after=$(host_bytes)
log "image file on its host: $(mib "$host_before") before fstrim, $(mib "$host_after") after"
((host_after + (8 << 20) <= host_before)) ||
  die "fstrim gave less than 8 MiB of the image file back: $host_before bytes before, $host_after after"

stop_dockerd
unmount_dhfs
"$bin/fsck.dhfs" -n "$img" >"$tmp/fsck.out" 2>&1 || die "fsck.dhfs -n at the end: $(cat "$tmp/fsck.out")"
log "docker on dhfs: all checks passed"
