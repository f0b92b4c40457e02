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

// Opens `path` exclusively (see DeviceOpenOptions). When it is held by
// another process but no longer mounted, that is a dhfs daemon still
// persisting its state after an unmount: wait up to `wait` for it. A device
// that is mounted is refused at once.
std::unique_ptr<Device> claim_device(const std::string& path, bool read_only, std::chrono::seconds wait,
                                     std::string& error);

}  // namespace dhfs
