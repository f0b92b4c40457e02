// Claiming a device for exclusive use by one dhfs daemon or fsck.dhfs.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "fs/device.h"

namespace dhfs {

// True if /proc/self/mountinfo lists a mount whose source is `device`
// (compared after resolving symlinks).
bool device_is_mounted(const std::string& device);

// The filesystem type /proc/self/mountinfo gives the mount that holds
// `path` ("ext4", "fuse.dhfs"), found by its device number; empty if `path`
// cannot be stat()ed or no mount matches.
std::string mount_type_of(const std::string& path);

// True if `path` can only be read: a block device set read-only (BLKROGET:
// `losetup -r`, `blockdev --setro`, a write-protected disk) or a file on a
// filesystem mounted read-only. mount(8) then mounts read-only with a
// warning; dhfs does the same.
bool write_protected(const std::string& path);

// Opens `path` exclusively (see DeviceOpenOptions). When it is held by
// another process but no longer mounted, that is a dhfs daemon still
// persisting its state after an unmount: wait up to `wait` for it. A device
// that is mounted is refused at once.
std::unique_ptr<Device> claim_device(const std::string& path, bool read_only, std::chrono::seconds wait,
                                     std::string& error);

}  // namespace dhfs
