#include "fs/storage_paths.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <optional>

#include <fmt/format.h>

namespace dhfs {

namespace {

// The file a loop device reads and writes: its device and inode numbers.
struct FileId {
  dev_t dev;
  ino_t ino;
  bool operator==(const FileId&) const = default;
};

// The backing file of the loop device open at `fd`; nullopt if `fd` is not
// an attached loop device. (The kernel reports the device number in the
// same encoding stat() uses.)
std::optional<FileId> loop_backing(int fd) {
  loop_info64 info{};
  if (::ioctl(fd, LOOP_GET_STATUS64, &info) != 0) return std::nullopt;
  return FileId{static_cast<dev_t>(info.lo_device), static_cast<ino_t>(info.lo_inode)};
}

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// Attached loop devices other than `self` (0: none) whose backing file is
// `file`, as /dev paths.
std::vector<std::string> loop_devices_over(const FileId& file, dev_t self) {
  std::vector<std::string> out;
  DIR* dir = ::opendir("/sys/block");
  if (dir == nullptr) return out;
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name.rfind("loop", 0) != 0) continue;
    unsigned maj = 0, min = 0;
    if (std::sscanf(read_line("/sys/block/" + name + "/dev").c_str(), "%u:%u", &maj, &min) != 2) continue;
    if (self != 0 && makedev(maj, min) == self) continue;
    const std::string node = "/dev/" + name;
    UniqueFd fd(::open(node.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd) continue;
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISBLK(st.st_mode) || st.st_rdev != makedev(maj, min)) continue;
    if (loop_backing(fd.get()) == file) out.push_back(node);
  }
  ::closedir(dir);
  return out;
}

// The loop device's backing file as sysfs names it, if that path still
// leads to `file` (it may be gone, or another file by now).
std::string backing_path(dev_t loop, const FileId& file) {
  const std::string name = read_line(fmt::format("/sys/dev/block/{}:{}/loop/backing_file", major(loop), minor(loop)));
  struct stat st {};
  if (name.empty() || ::stat(name.c_str(), &st) != 0 || FileId{st.st_dev, st.st_ino} != file) return {};
  return name;
}

// What `fd` (fstat `st`) holds the bytes of, and the other paths to them.
struct Storage {
  FileId file{};
  dev_t self = 0;            // the loop device itself, if `fd` is one
  std::string backing;       // its backing file, if found
  bool over_file = false;    // an image file, directly or behind a loop device
};

Storage storage_of(int fd, const struct stat& st) {
  Storage s;
  if (S_ISREG(st.st_mode)) {
    s.file = {st.st_dev, st.st_ino};
    s.over_file = true;
  } else if (S_ISBLK(st.st_mode)) {
    if (const std::optional<FileId> backing = loop_backing(fd)) {
      s.file = *backing;
      s.self = st.st_rdev;
      s.backing = backing_path(st.st_rdev, s.file);
      s.over_file = true;
    }
  }
  return s;
}

std::string in_use(const std::string& path, const std::string& other) {
  return fmt::format("{}: {} (the same storage) is in use by another dhfs or fsck.dhfs", path, other);
}

}  // namespace

std::vector<std::string> other_paths_to(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0) return {};
  const Storage s = storage_of(fd.get(), st);
  if (!s.over_file) return {};
  std::vector<std::string> out = loop_devices_over(s.file, s.self);
  if (!s.backing.empty()) out.insert(out.begin(), s.backing);
  return out;
}

bool OtherPathsClaim::take(const std::string& path, int fd, const struct stat& st, std::string& error) {
  const Storage s = storage_of(fd, st);
  if (!s.over_file) return true;  // a disk or partition: O_EXCL on it is the claim
  if (!s.backing.empty()) {
    // Locked as open_device locks an image file that a daemon uses directly.
    UniqueFd backing_fd(::open(s.backing.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    struct stat bst {};
    if (backing_fd && ::fstat(backing_fd.get(), &bst) == 0 && FileId{bst.st_dev, bst.st_ino} == s.file) {
      if (::flock(backing_fd.get(), LOCK_EX | LOCK_NB) != 0) {
        error = in_use(path, s.backing);
        return false;
      }
      held_.push_back(std::move(backing_fd));
    }
  }
  for (const std::string& other : loop_devices_over(s.file, s.self)) {
    UniqueFd other_fd(::open(other.c_str(), O_RDONLY | O_CLOEXEC | O_EXCL));
    if (!other_fd) {
      if (errno != EBUSY) continue;  // gone meanwhile
      error = in_use(path, other);
      return false;
    }
    held_.push_back(std::move(other_fd));
  }
  return true;
}

}  // namespace dhfs
