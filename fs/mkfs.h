// Formatting: writes a fresh, empty dhfs onto a device.
#pragma once

#include <string>

#include "fs/device.h"
#include "fs/format.h"

namespace dhfs {

struct FormatOptions {
  std::string label;
  // Discard the data area first, as mke2fs and mkfs.xfs do: what an earlier
  // filesystem left there goes back to a thin volume, an SSD or the host of
  // an image file (holes). Advisory: a medium that cannot discard keeps it.
  bool discard = true;
};

// Writes superblock, backup superblock, an initial checkpoint holding the
// root directory and its root slot. The primary superblock is written last,
// so an interrupted format is never mistaken for a filesystem. Returns false
// with one line in `error`.
bool format_device(Device& dev, const FormatOptions& opts, Superblock* out, std::string& error);

// Writes `sb` to the backup block (its last) and flushes, then to block 0
// and flushes: a crash in between leaves the primary as it was, and a torn
// primary is replaced by the backup (read_superblock). mkfs and an online
// grow use it. 0 or a negative errno.
int write_superblocks(Device& dev, const Superblock& sb);

// Gives everything outside the data area of an image file (superblocks,
// root slots, journal) real space on the filesystem that holds the image
// (Device::preallocate), so that a host that fills up can fail data writes
// but never a journal commit. mkfs does it; a mount does it again for an
// image made before mkfs did or copied sparse. 0 or a negative errno.
int preallocate_fixed_area(Device& dev, const Superblock& sb);

}  // namespace dhfs
