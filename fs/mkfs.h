// Formatting: writes a fresh, empty dhfs onto a device.
#pragma once

#include <string>

#include "fs/device.h"
#include "fs/format.h"

namespace dhfs {

struct FormatOptions {
  std::string label;
};

// Writes superblock, backup superblock, an initial checkpoint holding the
// root directory and its root slot. The primary superblock is written last,
// so an interrupted format is never mistaken for a filesystem. Returns false
// with one line in `error`.
bool format_device(Device& dev, const FormatOptions& opts, Superblock* out, std::string& error);

}  // namespace dhfs
