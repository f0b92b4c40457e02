// readdir: big directories, d_type, d_ino, telldir/seekdir, changes during iteration.
#include <fmt/format.h>
#include <sys/sysmacros.h>

#include <map>
#include <set>

#include "fixture.h"

using namespace dhfs_test;

namespace {

class Dir {
 public:
  explicit Dir(const std::string& path) : d_(::opendir(path.c_str())) {
    int e = errno;
    INFO("opendir " << path << " -> " << errname(d_ ? 0 : e));
    REQUIRE(d_ != nullptr);
  }
  ~Dir() {
    if (d_) ::closedir(d_);
  }
  Dir(const Dir&) = delete;
  Dir& operator=(const Dir&) = delete;
  DIR* get() const { return d_; }
  // Next entry, nullopt at the end (REQUIREs no error).
  std::optional<DirEntry> next() {
    errno = 0;
    struct dirent* de = ::readdir(d_);
    if (!de) {
      int e = errno;
      INFO("readdir -> " << errname(e));
      REQUIRE(e == 0);
      return std::nullopt;
    }
    return DirEntry{de->d_name, de->d_type, de->d_ino};
  }

 private:
  DIR* d_;
};

// Name and expected type of entry i of the big directory.
std::pair<std::string, unsigned char> big_entry(int i) {
  std::string name = fmt::format("entry-{:05d}", i);
  if (i % 7 == 0) name += "-" + std::string(200, char('a' + i % 26));  // some long names
  switch (i % 5) {
    case 0: return {name, DT_DIR};
    case 1: return {name, DT_LNK};
    case 2: return {name, DT_FIFO};
    default: return {name, DT_REG};
  }
}

}  // namespace

TEST_CASE("readdir of 10000 entries", "[readdir]") {
  MountedFs fs;
  const std::string big = fs.path("big");
  SYS(::mkdir(big.c_str(), 0755));
  Fd dfd = open_fd(big, O_RDONLY | O_DIRECTORY);
  constexpr int kN = 10000;
  int dirs = 0;
  for (int i = 0; i < kN; ++i) {
    auto [name, type] = big_entry(i);
    switch (type) {
      case DT_DIR: SYS(::mkdirat(dfd, name.c_str(), 0755)); ++dirs; break;
      case DT_LNK: SYS(::symlinkat("target", dfd, name.c_str())); break;
      case DT_FIFO: SYS(::mknodat(dfd, name.c_str(), S_IFIFO | 0644, 0)); break;
      default:
        if (i % 2) {
          SYS(::mknodat(dfd, name.c_str(), S_IFREG | 0644, 0));
        } else {
          int fd = SYS(::openat(dfd, name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644));
          ::close(fd);
        }
    }
  }
  CHECK(lstat_of(big).st_nlink == nlink_t(2 + dirs));

  std::map<std::string, int> seen;
  std::map<std::string, DirEntry> entries;
  for (auto& e : list_dir(big, true)) {
    ++seen[e.name];
    entries[e.name] = e;
  }
  CHECK(seen.size() == size_t(kN + 2));
  CHECK(seen["."] == 1);
  CHECK(seen[".."] == 1);
  int missing = 0, dup = 0, wrong_type = 0, wrong_ino = 0;
  for (int i = 0; i < kN; ++i) {
    auto [name, type] = big_entry(i);
    auto it = seen.find(name);
    if (it == seen.end()) {
      if (++missing < 5) FAIL_CHECK("missing " << name);
      continue;
    }
    if (it->second != 1 && ++dup < 5) FAIL_CHECK(name << " returned " << it->second << " times");
    if (entries[name].type != type && ++wrong_type < 5)
      FAIL_CHECK(name << ": d_type " << int(entries[name].type) << ", expected " << int(type));
    if (i % 97 == 0 && entries[name].ino != lstat_of(big + "/" + name).st_ino && ++wrong_ino < 5)
      FAIL_CHECK(name << ": d_ino differs from st_ino");
  }
  CHECK(missing == 0);
  CHECK(dup == 0);
  CHECK(wrong_type == 0);
  CHECK(wrong_ino == 0);
  CHECK(entries["."].ino == lstat_of(big).st_ino);
  CHECK(entries["."].type == DT_DIR);
  CHECK(entries[".."].type == DT_DIR);

  // telldir/seekdir: remember the position before every entry, then jump around.
  Dir dir(big);
  std::vector<long> pos;
  std::vector<std::string> order;
  for (;;) {
    long p = ::telldir(dir.get());
    auto e = dir.next();
    if (!e) break;
    pos.push_back(p);
    order.push_back(e->name);
  }
  REQUIRE(order.size() == size_t(kN + 2));
  for (size_t k : {size_t(0), size_t(1), size_t(5000), order.size() - 1, size_t(3), size_t(9999),
                   size_t(123)}) {
    INFO("seekdir to the position of entry " << k);
    ::seekdir(dir.get(), pos[k]);
    for (size_t j = k; j < std::min(order.size(), k + 3); ++j) {
      auto e = dir.next();
      REQUIRE(e.has_value());
      CHECK(e->name == order[j]);
    }
  }
  // After a seek into the middle, the rest of the directory follows in order.
  ::seekdir(dir.get(), pos[7000]);
  size_t j = 7000;
  while (auto e = dir.next()) {
    REQUIRE(j < order.size());
    CHECK(e->name == order[j]);
    ++j;
  }
  CHECK(j == order.size());
  ::rewinddir(dir.get());
  auto first = dir.next();
  REQUIRE(first.has_value());
  CHECK(first->name == order[0]);
}

TEST_CASE("d_type of every file type", "[readdir]") {
  MountedFs fs;
  write_file(fs.path("reg"), "x");
  SYS(::mkdir(fs.path("dir").c_str(), 0755));
  SYS(::symlink("reg", fs.path("lnk").c_str()));
  SYS(::mknod(fs.path("fifo").c_str(), S_IFIFO | 0644, 0));
  SYS(::mknod(fs.path("sock").c_str(), S_IFSOCK | 0644, 0));
  SYS(::mknod(fs.path("chr").c_str(), S_IFCHR | 0644, makedev(1, 3)));
  SYS(::mknod(fs.path("blk").c_str(), S_IFBLK | 0644, makedev(7, 0)));
  std::map<std::string, unsigned char> types;
  for (auto& e : list_dir(fs.root())) {
    types[e.name] = e.type;
    INFO(e.name);
    CHECK(e.ino == lstat_of(fs.path(e.name)).st_ino);
  }
  CHECK(types == std::map<std::string, unsigned char>{{"reg", DT_REG}, {"dir", DT_DIR},
                                                      {"lnk", DT_LNK}, {"fifo", DT_FIFO},
                                                      {"sock", DT_SOCK}, {"chr", DT_CHR},
                                                      {"blk", DT_BLK}});
}

TEST_CASE("readdir while unlinking every entry returned", "[readdir]") {
  MountedFs fs;
  const std::string d = fs.path("d");
  SYS(::mkdir(d.c_str(), 0755));
  constexpr int kN = 2000;
  for (int i = 0; i < kN; ++i) SYS(::mknod(fmt::format("{}/f{:04d}", d, i).c_str(), S_IFREG | 0644, 0));

  // The rm -rf pattern: read an entry, unlink it, read on.
  std::map<std::string, int> seen;
  {
    Dir dir(d);
    while (auto e = dir.next()) {
      if (e->name == "." || e->name == "..") continue;
      ++seen[e->name];
      SYS(::unlink((d + "/" + e->name).c_str()));
    }
  }
  CHECK(seen.size() == size_t(kN));
  int dups = 0;
  for (auto& [name, n] : seen)
    if (n != 1) ++dups;
  CHECK(dups == 0);
  CHECK(list_names(d).empty());
  SYS(::rmdir(d.c_str()));
}

TEST_CASE("readdir while other entries are removed and added", "[readdir]") {
  MountedFs fs;
  const std::string d = fs.path("d");
  SYS(::mkdir(d.c_str(), 0755));
  constexpr int kN = 2000;
  for (int i = 0; i < kN; ++i) SYS(::mknod(fmt::format("{}/f{:04d}", d, i).c_str(), S_IFREG | 0644, 0));

  std::map<std::string, int> seen;
  bool mutated = false;
  {
    Dir dir(d);
    int count = 0;
    while (auto e = dir.next()) {
      if (e->name == "." || e->name == "..") continue;
      ++seen[e->name];
      if (++count == 10 && !mutated) {
        // Remove every odd-numbered entry that has not been returned yet and
        // add new ones; those may or may not show up, but the even ones must,
        // exactly once.
        for (int i = 1; i < kN; i += 2) {
          std::string name = fmt::format("f{:04d}", i);
          if (!seen.count(name)) SYS(::unlink((d + "/" + name).c_str()));
        }
        for (int i = 0; i < 500; ++i)
          SYS(::mknod(fmt::format("{}/new{:04d}", d, i).c_str(), S_IFREG | 0644, 0));
        mutated = true;
      }
    }
  }
  REQUIRE(mutated);
  int missing = 0, dups = 0;
  for (int i = 0; i < kN; i += 2)
    if (!seen.count(fmt::format("f{:04d}", i))) ++missing;
  for (auto& [name, n] : seen)
    if (n != 1) ++dups;
  CHECK(missing == 0);
  CHECK(dups == 0);
  // Afterwards the directory lists exactly what is there.
  auto names = list_names(d);
  std::set<std::string> expect;
  for (int i = 0; i < kN; ++i) {
    std::string name = fmt::format("f{:04d}", i);
    if (i % 2 == 0 || exists(d + "/" + name)) expect.insert(name);
  }
  for (int i = 0; i < 500; ++i) expect.insert(fmt::format("new{:04d}", i));
  CHECK(std::set<std::string>(names.begin(), names.end()) == expect);
  CHECK(names.size() == expect.size());
}
