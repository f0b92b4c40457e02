// The other paths to a medium's bytes. An image file can also be reached
// through any loop device over it, and a loop device through its backing
// file and through the other loop devices over that file. O_EXCL and flock
// guard only the path they are taken on, so two dhfs daemons (or a dhfs and
// a kernel mount, or mkfs.dhfs and a running daemon) on two paths to the
// same bytes would each write over the other's metadata: mkfs.dhfs on an
// image file formatted it while a dhfs mounted from a loop device over it
// was serving, and a second daemon mounted the same image from a second
// loop device.
#pragma once

#include <sys/stat.h>

#include <string>
#include <vector>

#include "fs/unique_fd.h"

namespace dhfs {

// The other paths to the bytes of the medium at `path`: for an image file
// the loop devices over it; for a loop device its backing file and the
// other loop devices over that file. Empty for anything else, or where
// they cannot be found.
std::vector<std::string> other_paths_to(const std::string& path);

class OtherPathsClaim {
 public:
  OtherPathsClaim() = default;

  // Claims the other paths to the medium `path` that is open at `fd`
  // (fstat `st`, itself already taken exclusively): the backing file of a
  // loop device is flock()ed as open_device locks an image file, and every
  // other loop device over the same file is opened O_EXCL, which a mount of
  // it or a daemon holding it refuses. Held until this object goes.
  // False, with one line in `error` naming `path` and the other path
  // ("PATH: OTHER (the same storage) is in use by another dhfs or
  // fsck.dhfs"), when one is in use. Paths this process cannot reach (no
  // /sys, no /dev/loopN node, a deleted backing file) are not claimed.
  bool take(const std::string& path, int fd, const struct stat& st, std::string& error);


 private:
  std::vector<UniqueFd> held_;
};

}  // namespace dhfs
