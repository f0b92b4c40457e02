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
  std::uint64_t shared_blocks;     // referenced by more than one block map
  std::uint64_t saved_blocks;      // what sharing saves: sum of (references - 1)
  std::uint64_t regions;
  std::uint64_t packed_files;      // small files in pack blocks
  std::uint64_t packed_bytes;      // their sizes
  std::uint64_t pack_blocks;       // blocks holding them
  std::uint64_t pack_unused_bytes; // bytes of those blocks no file holds
  std::uint64_t filesystem_blocks; // all of it: superblocks, journal, data area
  std::uint64_t reserved[8];
};

struct ControlRegion {
  std::uint32_t id;
  std::uint32_t slices;
  std::uint64_t root_ino;
  std::uint64_t reserved_blocks;
  std::uint64_t used_blocks;
  std::uint64_t shared_blocks;
  std::uint64_t reclaimed_blocks;
  char root_path[192];  // NUL-terminated, "..." in front when cut
};

// Regions in ascending id from `cursor` on; `cursor` comes back as the id
// to continue from (0: done).
struct ControlRegionList {
  std::uint32_t version;
  std::uint32_t count;
  std::uint32_t cursor;
  std::uint32_t total;
  ControlRegion regions[60];
};

struct ControlRegionCreate {
  std::uint64_t bytes;  // 0: the filesystem's default region size
};

struct ControlFrag {
  std::uint64_t size;
  std::uint64_t extents;
  std::uint64_t mapped_blocks;
  std::uint64_t shared_blocks;
  std::uint64_t in_region_blocks;
  std::uint32_t region;
  std::uint32_t pad;
};

struct ControlDedup {
  std::uint64_t size;
  std::uint64_t freed_blocks;  // blocks this file gave up for shared ones
  std::uint32_t hashed;        // its content hash is known
  std::uint32_t duplicate;     // another file holds the same bytes
  std::uint32_t shared;        // ... and it now shares that file's extents
  std::uint32_t pad;
};

// DHFS_IOC_GROW: `bytes` in (0: all the device has), the rest out.
struct ControlGrow {
  std::uint64_t bytes;
  std::uint64_t old_bytes;
  std::uint64_t new_bytes;
  std::uint64_t device_bytes;
};

// FUSE requests of one kind the daemon answered since it mounted.
struct ControlRequestKind {
  std::uint32_t opcode;  // FUSE_LOOKUP, ... (linux/fuse.h)
  std::uint32_t pad;
  std::uint64_t count;
  std::uint64_t total_ns;  // from reading a request to handing over its reply
  std::uint64_t max_ns;
};

struct ControlRequests {
  std::uint32_t version;
  std::uint32_t count;  // kinds with at least one request
  ControlRequestKind kinds[64];
};

}  // namespace dhfs

#define DHFS_IOC_STATS _IOR('D', 1, struct dhfs::ControlStats)
// Commits the journal: everything done before it is durable on return. The
// kernel does not forward sync(2)/syncfs(2) to FUSE file systems other than
// virtiofs, so this is how a script makes a whole dhfs durable at once.
#define DHFS_IOC_SYNC _IO('D', 2)
#define DHFS_IOC_REGIONS _IOWR('D', 3, struct dhfs::ControlRegionList)
#define DHFS_IOC_REGION_SHOW _IOR('D', 4, struct dhfs::ControlRegion)
#define DHFS_IOC_REGION_CREATE _IOW('D', 5, struct dhfs::ControlRegionCreate)
#define DHFS_IOC_FRAG _IOR('D', 6, struct dhfs::ControlFrag)
// Dedups the file: hashes it (reading it if needed) and shares the extents
// of a stored file with the same bytes (verified byte by byte).
#define DHFS_IOC_DEDUP _IOR('D', 7, struct dhfs::ControlDedup)
// The daemon's count and time of the FUSE requests of each kind (RequestStats).
#define DHFS_IOC_REQUESTS _IOR('D', 8, struct dhfs::ControlRequests)
// Grows the filesystem onto more of its device, online (FileSystem::grow);
// root only, as FITRIM.
#define DHFS_IOC_GROW _IOWR('D', 9, struct dhfs::ControlGrow)

#include <span>
#include <vector>

namespace dhfs {

class FileSystem;
class RequestStats;

// Serves one control ioctl `cmd` on inode `ino`: `in` is what the caller
// passed, `out` receives the reply. `requests` are the FUSE adapter's counts
// (nullptr without one: DHFS_IOC_REQUESTS is then unknown). `admin`: the
// caller is root, as FITRIM (fstrim, struct fstrim_range of <linux/fs.h>)
// and DHFS_IOC_GROW require, like on every local filesystem. Returns 0 or a
// negative errno (-ENOTTY for an unknown command). Lives in the core, so it
// is tested without FUSE.
int serve_control(FileSystem& fs, const RequestStats* requests, std::uint64_t ino, unsigned cmd, bool admin,
                  std::span<const std::byte> in, std::vector<std::byte>& out);

}  // namespace dhfs
