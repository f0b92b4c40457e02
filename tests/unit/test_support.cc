#include "tests/unit/test_support.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fmt/format.h>
#include <set>
#include <type_traits>
#include <variant>

#include "fs/fsck.h"
#include "fs/inode.h"
#include "fs/mkfs.h"

namespace dhfs::test {

std::shared_ptr<MemDevice> format_medium(std::uint64_t bytes, Superblock* sb) {
  auto medium = std::make_shared<MemDevice>(bytes);
  std::string error;
  INFO(error);
  REQUIRE(format_device(*medium, FormatOptions{}, sb, error));
  return medium;
}

std::unique_ptr<FileSystem> try_open_fs(const std::shared_ptr<MemDevice>& medium, std::string& error,
                                        const FsOptions& opts, std::shared_ptr<IoHook> hook) {
  return FileSystem::open(std::make_unique<SharedMemDevice>(medium, std::move(hook)), opts, error);
}

std::unique_ptr<FileSystem> open_fs(const std::shared_ptr<MemDevice>& medium, const FsOptions& opts) {
  std::string error;
  auto fs = try_open_fs(medium, error, opts);
  INFO("open failed: " << error);
  REQUIRE(fs != nullptr);
  return fs;
}

std::unique_ptr<FileSystem> make_fs(std::shared_ptr<MemDevice>* medium, std::uint64_t bytes, const FsOptions& opts) {
  auto m = format_medium(bytes);
  if (medium) *medium = m;
  return open_fs(m, opts);
}

std::shared_ptr<MemDevice> crash_copy(const std::shared_ptr<MemDevice>& medium) {
  const std::uint64_t size = medium->size_bytes();
  AlignedBuffer buf(size);
  // One submit: MemDevice serves a batch under its lock, so no write of a
  // background thread lands halfway through the copy.
  std::vector<DeviceIo> ios;
  constexpr std::uint64_t kPiece = 1ULL << 30;
  for (std::uint64_t off = 0; off < size; off += kPiece)
    ios.push_back({DeviceIo::Op::Read, off, buf.data() + off,
                   static_cast<std::uint32_t>(std::min(kPiece, size - off))});
  REQUIRE(medium->submit(ios) == 0);
  auto copy = std::make_shared<MemDevice>(size);
  std::memcpy(copy->bytes().data(), buf.data(), size);
  return copy;
}

int run_in_child(const std::function<int()>& body, std::chrono::seconds timeout) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int rc = 99;
    try {
      rc = body();
    } catch (...) {
      rc = 98;
    }
    std::fflush(nullptr);
    ::_exit(rc);
  }
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    pid_t got = ::waitpid(pid, &status, WNOHANG);
    REQUIRE(got >= 0);
    if (got == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (std::chrono::steady_clock::now() > until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    ::usleep(20000);
  }
}

// ------------------------------------------------------------------ bytes

std::span<const std::byte> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string pattern(std::size_t len, std::uint64_t seed) {
  std::string s(len, '\0');
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
  for (std::size_t i = 0; i < len; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

// --------------------------------------------------------------- file I/O

Ino write_file(FileSystem& fs, Ino parent, std::string_view name, std::string_view content, std::uint32_t mode) {
  Attr a;
  int rc = fs.create(parent, name, mode, O_WRONLY | O_CREAT, kRoot, &a);
  INFO("create " << name);
  REQUIRE(rc == 0);
  if (!content.empty()) {
    ssize_t n = fs.write(a.ino, 0, as_bytes(content));
    REQUIRE(n == static_cast<ssize_t>(content.size()));
  }
  fs.release(a.ino);
  fs.forget(a.ino, 1);
  return a.ino;
}

void write_at(FileSystem& fs, Ino ino, std::uint64_t off, std::string_view content) {
  REQUIRE(fs.open(ino, O_WRONLY) == 0);
  ssize_t n = fs.write(ino, off, as_bytes(content));
  fs.release(ino);
  REQUIRE(n == static_cast<ssize_t>(content.size()));
}

std::string read_at(FileSystem& fs, Ino ino, std::uint64_t off, std::size_t len) {
  std::string out;
  AlignedBuffer scratch;
  while (out.size() < len) {
    std::size_t n = std::min<std::size_t>(len - out.size(), 4 << 20);
    std::span<const std::byte> got;
    int rc = fs.read(ino, off + out.size(), n, scratch, &got);
    REQUIRE(rc == 0);
    if (got.empty()) break;
    out.append(reinterpret_cast<const char*>(got.data()), got.size());
  }
  return out;
}

std::string read_file(FileSystem& fs, Ino ino) { return read_at(fs, ino, 0, getattr_of(fs, ino).size); }

Ino lookup_ino(FileSystem& fs, Ino parent, std::string_view name, int* err) {
  Attr a;
  int rc = fs.lookup(parent, name, &a);
  if (err) *err = rc;
  if (rc != 0) {
    if (!err) FAIL("lookup " << name << ": " << std::strerror(-rc));
    return 0;
  }
  fs.forget(a.ino, 1);
  return a.ino;
}

Ino resolve(FileSystem& fs, std::string_view path) {
  Ino cur = kRootIno;
  while (!path.empty()) {
    auto slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    cur = lookup_ino(fs, cur, part);
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
  }
  return cur;
}

Attr getattr_of(FileSystem& fs, Ino ino) {
  Attr a;
  int rc = fs.getattr(ino, &a);
  INFO("getattr " << ino);
  REQUIRE(rc == 0);
  return a;
}

std::vector<std::string> list_dir(FileSystem& fs, Ino dir) {
  std::vector<std::string> names;
  REQUIRE(fs.opendir(dir) == 0);
  int rc = fs.readdir(dir, 0, false, [&](const DirListEntry& e, const Attr*) {
    if (e.name != "." && e.name != "..") names.emplace_back(e.name);
    return true;
  });
  fs.releasedir(dir);
  REQUIRE(rc == 0);
  return names;
}

// ---------------------------------------------------------------- records

bool same_record(const Record& a, const Record& b) { return a == b; }

std::string describe_record(const Record& r) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, InodeRec>) {
          return fmt::format("Inode{{ino={} gen={} mode={:o} nlink={} size={} symlink={}B}}", x.ino, x.generation,
                             x.mode, x.nlink, x.size, x.symlink.size());
        } else if constexpr (std::is_same_v<T, InodeFreeRec>) {
          return fmt::format("InodeFree{{{}}}", x.ino);
        } else if constexpr (std::is_same_v<T, DirentSetRec>) {
          return fmt::format("DirentSet{{{} '{}' -> {} dt{}}}", x.parent, x.name, x.child, x.dtype);
        } else if constexpr (std::is_same_v<T, DirentDelRec>) {
          return fmt::format("DirentDel{{{} '{}'}}", x.parent, x.name);
        } else if constexpr (std::is_same_v<T, ExtentSetRec>) {
          return fmt::format("ExtentSet{{{} [{},+{}) -> {} f{}}}", x.ino, x.lblk, x.len, x.pblk, x.flags);
        } else if constexpr (std::is_same_v<T, XattrSetRec>) {
          return fmt::format("XattrSet{{{} '{}' {}B}}", x.ino, x.name, x.value.size());
        } else if constexpr (std::is_same_v<T, XattrDelRec>) {
          return fmt::format("XattrDel{{{} '{}'}}", x.ino, x.name);
        } else if constexpr (std::is_same_v<T, RefcountSetRec>) {
          return fmt::format("RefcountSet{{[{},+{}) x{}}}", x.pblk, x.len, x.count);
        } else if constexpr (std::is_same_v<T, RegionSetRec>) {
          return fmt::format("RegionSet{{{} root={} {} slices}}", x.id, x.root, x.reserved.size());
        } else if constexpr (std::is_same_v<T, RegionDelRec>) {
          return fmt::format("RegionDel{{{}}}", x.id);
        } else if constexpr (std::is_same_v<T, ConfigSetRec>) {
          return fmt::format("ConfigSet{{'{}'='{}'}}", x.name, x.value);
        } else {
          return fmt::format("ContentHash{{{} valid={} size={} {:016x}{:016x}}}", x.ino, x.valid, x.size, x.hi, x.lo);
        }
      },
      r);
}

// -------------------------------------------------------------- snapshots

namespace {

std::string hex128(XXH128_hash_t h) { return fmt::format("{:016x}{:016x}", h.high64, h.low64); }

void fill_file_state(FileSystem& fs, NodeState& st, const SnapshotOptions& opts) {
  for (std::int64_t off = 0; off < static_cast<std::int64_t>(st.size);) {
    std::int64_t d = fs.lseek(st.ino, off, SEEK_DATA);
    if (d == -ENXIO) break;
    REQUIRE(d >= 0);
    std::int64_t h = fs.lseek(st.ino, d, SEEK_HOLE);
    REQUIRE(h > d);
    st.data.emplace_back(d, h);
    off = h;
  }
  XXH3_state_t* state = XXH3_createState();
  REQUIRE(state != nullptr);
  XXH3_128bits_reset(state);
  AlignedBuffer scratch;
  auto hash_range = [&](std::uint64_t from, std::uint64_t to) {
    for (std::uint64_t off = from; off < to;) {
      std::span<const std::byte> got;
      int rc = fs.read(st.ino, off, std::min<std::uint64_t>(to - off, 1 << 20), scratch, &got);
      REQUIRE(rc == 0);
      REQUIRE(!got.empty());
      XXH3_128bits_update(state, got.data(), got.size());
      off += got.size();
    }
  };
  if (st.size <= opts.content_limit) {
    hash_range(0, st.size);
  } else {
    for (auto [from, to] : st.data) hash_range(from, to);
  }
  st.content_hash = hex128(XXH3_128bits_digest(state));
  XXH3_freeState(state);
}

NodeState state_of(FileSystem& fs, const Attr& a, std::uint8_t dtype, const SnapshotOptions& opts) {
  NodeState st;
  st.ino = a.ino;
  st.generation = a.generation;
  st.mode = a.mode;
  st.nlink = a.nlink;
  st.uid = a.uid;
  st.gid = a.gid;
  st.rdev = a.rdev;
  st.size = a.size;
  st.blocks = a.blocks;
  st.atime_ns = opts.atime ? a.atime_ns : 0;
  st.mtime_ns = a.mtime_ns;
  st.ctime_ns = a.ctime_ns;
  st.dtype = dtype;
  if (S_ISLNK(a.mode)) REQUIRE(fs.readlink(a.ino, &st.link) == 0);
  std::string names;
  REQUIRE(fs.listxattr(a.ino, &names) == 0);
  for (std::size_t pos = 0; pos < names.size();) {
    std::size_t end = names.find('\0', pos);
    REQUIRE(end != std::string::npos);
    std::string name = names.substr(pos, end - pos);
    std::string value;
    REQUIRE(fs.getxattr(a.ino, name, &value) == 0);
    st.xattrs.emplace(name, std::move(value));
    pos = end + 1;
  }
  if (S_ISREG(a.mode)) fill_file_state(fs, st, opts);
  return st;
}

void walk(FileSystem& fs, Ino dir, const std::string& path, Snapshot& out, const SnapshotOptions& opts) {
  struct Entry {
    std::string name;
    Ino ino;
    std::uint8_t dtype;
  };
  std::vector<Entry> entries;
  REQUIRE(fs.opendir(dir) == 0);
  int rc = fs.readdir(dir, 0, false, [&](const DirListEntry& e, const Attr*) {
    if (e.name != "." && e.name != "..") entries.push_back({std::string(e.name), e.ino, e.dtype});
    return true;
  });
  fs.releasedir(dir);
  REQUIRE(rc == 0);
  for (const Entry& e : entries) {
    Attr a;
    INFO("lookup " << path << "/" << e.name);
    REQUIRE(fs.lookup(dir, e.name, &a) == 0);
    fs.forget(a.ino, 1);
    CHECK(a.ino == e.ino);
    std::string child = path.empty() ? e.name : path + "/" + e.name;
    out[child] = state_of(fs, a, e.dtype, opts);
    if (S_ISDIR(a.mode)) walk(fs, a.ino, child, out, opts);
  }
}

std::string describe(const NodeState& s) {
  std::string x;
  for (const auto& [k, v] : s.xattrs) x += fmt::format(" {}({}B:{:016x})", k, v.size(), XXH3_64bits(v.data(), v.size()));
  std::string d;
  for (auto [a, b] : s.data) d += fmt::format(" [{},{})", a, b);
  return fmt::format(
      "ino={} gen={} mode={:o} nlink={} uid={} gid={} rdev={} size={} blocks={} atime={} mtime={} ctime={} dtype={} "
      "link='{}' xattrs:{} data:{} hash={}",
      s.ino, s.generation, s.mode, s.nlink, s.uid, s.gid, s.rdev, s.size, s.blocks, s.atime_ns, s.mtime_ns,
      s.ctime_ns, s.dtype, s.link, x, d, s.content_hash);
}

}  // namespace

Snapshot snapshot(FileSystem& fs, const SnapshotOptions& opts) {
  Snapshot out;
  Attr root = getattr_of(fs, kRootIno);
  out[""] = state_of(fs, root, 4 /* DT_DIR */, opts);
  walk(fs, kRootIno, "", out, opts);
  return out;
}

std::string diff(const Snapshot& a, const Snapshot& b, std::size_t max_lines) {
  std::string out;
  std::size_t lines = 0;
  auto note = [&](const std::string& line) {
    if (lines++ < max_lines) out += line + "\n";
  };
  std::set<std::string> keys;
  for (const auto& [k, v] : a) keys.insert(k);
  for (const auto& [k, v] : b) keys.insert(k);
  for (const std::string& k : keys) {
    auto ia = a.find(k), ib = b.find(k);
    if (ia == a.end()) {
      note(fmt::format("'{}' only in the second: {}", k, describe(ib->second)));
    } else if (ib == b.end()) {
      note(fmt::format("'{}' only in the first: {}", k, describe(ia->second)));
    } else if (!(ia->second == ib->second)) {
      note(fmt::format("'{}' differs:\n  first:  {}\n  second: {}", k, describe(ia->second), describe(ib->second)));
    }
  }
  if (lines > max_lines) out += fmt::format("... {} differences in all\n", lines);
  return out;
}

void require_files(FileSystem& fs, const std::map<std::string, std::string>& files) {
  for (const auto& [path, content] : files) {
    INFO(path);
    CHECK(read_file(fs, resolve(fs, path)) == content);
  }
}

void require_fsck_clean(MemDevice& medium) {
  Checker checker(medium, FsckOptions{});
  FsckReport r = checker.run();
  std::string problems;
  for (const auto& p : r.problems) problems += p + "; ";
  INFO("fsck: " << r.reason << " " << problems);
  REQUIRE(r.exit_code == kFsckClean);
}

std::unique_ptr<FileSystem> remount_checked(std::unique_ptr<FileSystem>& fs, const std::shared_ptr<MemDevice>& medium,
                                            const std::map<std::string, std::string>& files) {
  REQUIRE(fs->shutdown() == 0);
  fs.reset();
  require_fsck_clean(*medium);
  auto reopened = open_fs(medium);
  require_files(*reopened, files);
  return reopened;
}

}  // namespace dhfs::test
