#include "snapshot.h"

#include <fmt/format.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "fixture.h"

namespace dhfs_test {

namespace {

uint64_t fnv(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

std::string show_value(const std::string& v) {
  bool printable = v.size() <= 40 && std::all_of(v.begin(), v.end(), [](char c) {
                     return c >= 0x20 && c < 0x7f && c != '"';
                   });
  if (printable) return "\"" + v + "\"";
  return fmt::format("<{} bytes {:016x}>", v.size(), fnv(v));
}

const char* type_of(mode_t m) {
  if (S_ISREG(m)) return "reg";
  if (S_ISDIR(m)) return "dir";
  if (S_ISLNK(m)) return "lnk";
  if (S_ISCHR(m)) return "chr";
  if (S_ISBLK(m)) return "blk";
  if (S_ISFIFO(m)) return "fifo";
  if (S_ISSOCK(m)) return "sock";
  return "?";
}

void walk(const std::string& root, const std::string& rel, const SnapshotOptions& opts,
          Snapshot& out) {
  const std::string path = rel.empty() ? root : root + "/" + rel;
  struct stat st = lstat_of(path);
  std::string d = fmt::format("{} mode={:04o} uid={} gid={} nlink={}", type_of(st.st_mode),
                              st.st_mode & 07777, st.st_uid, st.st_gid, st.st_nlink);
  if (!S_ISDIR(st.st_mode)) d += fmt::format(" size={}", st.st_size);
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
    d += fmt::format(" rdev={}:{}", major(st.st_rdev), minor(st.st_rdev));
  d += fmt::format(" mtime={}.{:09}", st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  if (opts.ctime) d += fmt::format(" ctime={}.{:09}", st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
  if (opts.inode_numbers) d += fmt::format(" ino={}", st.st_ino);
  if (S_ISLNK(st.st_mode)) {
    std::string buf(8192, '\0');
    ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
    REQUIRE(n >= 0);
    buf.resize(size_t(n));
    d += " target=" + show_value(buf);
  }
  auto names = list_xattrs(path);
  if (!names.empty()) {
    d += " xattrs={";
    for (auto& n : names) {
      auto v = get_xattr(path, n);
      d += n + "=" + (v ? show_value(*v) : std::string("<vanished>")) + ";";
    }
    d += "}";
  }
  if (S_ISREG(st.st_mode)) d += " content=" + content_digest(path);
  out[rel] = d;
  if (S_ISDIR(st.st_mode))
    for (auto& e : list_dir(path)) walk(root, rel.empty() ? e.name : rel + "/" + e.name, opts, out);
}

}  // namespace

Snapshot take_snapshot(const std::string& root, SnapshotOptions opts) {
  Snapshot s;
  walk(root, "", opts, s);
  return s;
}

void check_same_snapshot(const Snapshot& before, const Snapshot& after, const std::string& what) {
  INFO(what);
  int reported = 0, differing = 0;
  auto report = [&](const std::string& path, const std::string& msg) {
    ++differing;
    if (++reported <= 25) FAIL_CHECK("'" << path << "': " << msg);
  };
  for (auto& [path, desc] : before) {
    auto it = after.find(path);
    if (it == after.end())
      report(path, "missing afterwards (was: " + desc + ")");
    else if (it->second != desc)
      report(path, "changed\n  before: " + desc + "\n  after:  " + it->second);
  }
  for (auto& [path, desc] : after)
    if (!before.count(path)) report(path, "appeared: " + desc);
  CHECK(differing == 0);
  CHECK(before.size() == after.size());
}

}  // namespace dhfs_test
