#include "fs/device_claim.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/fs.h>  // BLKROGET
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>

#include <cctype>
#include <fstream>
#include <sstream>
#include <thread>

#include "fs/storage_paths.h"
#include "fs/unique_fd.h"

namespace dhfs {

namespace {

std::string resolve(const std::string& p) {
  char* r = ::realpath(p.c_str(), nullptr);
  if (!r) return p;
  std::string s(r);
  free(r);
  return s;
}

// mountinfo escapes blanks and backslashes as \ooo.
std::string unescape(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The fields of a /proc/self/mountinfo line that dhfs looks at.
struct MountLine {
  std::string devno;   // "major:minor" of the mounted filesystem
  std::string fstype;  // e.g. "ext4", "fuse.dhfs"
  std::string source;  // as mountinfo escapes it
};

template <typename Fn>
void for_each_mount(Fn&& fn) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    const std::size_t sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    MountLine m;
    std::string id, parent;
    std::istringstream(line) >> id >> parent >> m.devno;
    std::istringstream(line.substr(sep + 3)) >> m.fstype >> m.source;
    fn(m);
  }
}

// `path`, or another path to the same bytes, that is mounted; empty if none.
std::string mounted_as(const std::string& path) {
  if (device_is_mounted(path)) return path;
  for (const std::string& other : other_paths_to(path))
    if (device_is_mounted(other)) return other;
  return {};
}

bool held_by_someone(const std::string& error) {
  return error.find("in use by another") != std::string::npos || error.find("device is busy") != std::string::npos;
}

}  // namespace

bool write_protected(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;  // the open says why
  if (S_ISBLK(st.st_mode)) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    int ro = 0;
    return fd && ::ioctl(fd.get(), BLKROGET, &ro) == 0 && ro != 0;
  }
  struct statvfs vfs {};
  return ::statvfs(path.c_str(), &vfs) == 0 && (vfs.f_flag & ST_RDONLY) != 0;
}

bool device_is_mounted(const std::string& device) {
  const std::string want = resolve(device);
  bool found = false;
  for_each_mount([&](const MountLine& m) {
    found = found || unescape(m.source) == want;
  });
  return found;
}

std::string mount_type_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  const std::string devno = fmt::format("{}:{}", major(st.st_dev), minor(st.st_dev));
  std::string type;
  for_each_mount([&](const MountLine& m) {
    if (type.empty() && m.devno == devno) type = m.fstype;
  });
  return type;
}

std::unique_ptr<Device> claim_device(const std::string& path, bool read_only, std::chrono::seconds wait,
                                     std::string& error) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  DeviceOpenOptions opts;
  opts.read_only = read_only;
  opts.exclusive = true;
  while (true) {
    error.clear();
    auto dev = open_device(path, opts, error);
    if (dev) return dev;
    // Held and mounted (through this path or another to the same bytes):
    // refused at once. Held only: a daemon still persisting after its
    // unmount, waited for.
    const bool held = held_by_someone(error);
    const std::string mounted = held ? mounted_as(path) : std::string();
    if (!held || !mounted.empty() || std::chrono::steady_clock::now() >= deadline) {
      if (!mounted.empty())
        error = mounted == path ? fmt::format("{}: already mounted", path)
                                : fmt::format("{}: already mounted as {}", path, mounted);
      return nullptr;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace dhfs
