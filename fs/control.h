// The control interface between dhfsctl and a running dhfs daemon: ioctls
// on any file or directory of the mount. Structures are fixed-size and
// versioned; the kernel copies them in and out by the size encoded in the
// ioctl number.
#pragma once

#include <linux/ioctl.h>

#include <cstdint>

namespace dhfs {

inline constexpr std::uint32_t kControlVersion = 1;

struct ControlStats {
  std::uint32_t version;
  std::uint32_t block_size;
  std::uint64_t total_blocks;      // data area
  std::uint64_t free_blocks;
  std::uint64_t available_blocks;
  std::uint64_t inodes;
  std::uint64_t logical_bytes;     // sum of file sizes
  std::uint64_t allocated_blocks;  // blocks referenced by files
  std::uint64_t metadata_blocks;   // journal + checkpoint
  std::uint8_t uuid[16];
  std::uint64_t reserved[16];
};

}  // namespace dhfs

#define DHFS_IOC_STATS _IOR('D', 1, struct dhfs::ControlStats)
// Commits the journal: everything done before it is durable on return. The
// kernel does not forward sync(2)/syncfs(2) to FUSE file systems other than
// virtiofs, so this is how a script makes a whole dhfs durable at once.
#define DHFS_IOC_SYNC _IO('D', 2)
