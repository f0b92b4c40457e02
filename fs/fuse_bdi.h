// The kernel's per-mount page-cache settings of a FUSE mount (its backing
// device info, /sys/class/bdi/MAJ:MIN), which can be changed only through
// sysfs once FUSE_INIT is answered.
//
// Read-ahead: the kernel starts every FUSE mount with the default 128 KiB
// (and caps it at the FUSE_INIT reply), so a cold sequential read waits for
// one small request after another. (Measured on the bench VM: a cold 1 GiB
// read went from 0.63 to 1.25 GB/s at 4 MiB.) The -o readahead option sets
// it (FsOptions::readahead_bytes).
//
// Dirty pages: the kernel gives a FUSE mount a strict share of 1% of the
// dirty threshold, because a FUSE daemon may be unprivileged or never write
// back. dhfs runs as root and writes back like a kernel filesystem, so by
// default it takes the share a kernel filesystem has (not strict, up to
// 100%): writers are then throttled by the machine's dirty limits instead
// of by the daemon's write-back speed at a few tens of MiB. (Bench VM: a
// 256 MiB sequential write with end_fsync: median 680 MB/s strict, 850
// lifted. That holds since one file's write-back runs side by side, see
// FileSystem::write_large_in_stripes; while it was serialised the limit
// made no difference.)
#pragma once

#include <string>

namespace dhfs {

// "maj:min" of the mount at `mountpoint` (the newest one there), from
// /proc/self/mountinfo; empty if not found. Reads no file below the mount,
// so it is safe before the daemon serves requests.
std::string mount_device_id(const std::string& mountpoint);

// Writes /sys/class/bdi/<id>/read_ahead_kb. False if that fails (an old
// kernel, no sysfs in a container); read-ahead then stays at the default.
bool set_readahead_kb(const std::string& device_id, unsigned kb);

// Lifts the strict 1% dirty-page limit (strict_limit 0, max_ratio 100).
// False if that fails (strict_limit needs Linux 6.2); the limit then stays.
bool lift_dirty_limit(const std::string& device_id);

}  // namespace dhfs
