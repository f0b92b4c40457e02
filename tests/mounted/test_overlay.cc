// Kernel overlayfs with upperdir and workdir on the filesystem under test and the
// lower layer either on it too or on a tmpfs.
#include <fmt/format.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <memory>

#include "fixture.h"
#include "snapshot.h"

using namespace dhfs_test;

namespace {

enum class Lower { OnFs, OnTmpfs };

const char* lower_name(Lower l) { return l == Lower::OnFs ? "lower on the fs under test" : "lower on tmpfs"; }

constexpr off_t kMiB = 1 << 20;

void populate_lower(const std::string& l) {
  write_file(l + "/a", "lower a");
  set_xattr(l + "/a", "user.lower", "L");
  write_file(l + "/b", "lower b", 0644);
  write_file(l + "/big", random_bytes(size_t(4 * kMiB), 301));
  {
    Fd fd = open_fd(l + "/sparse", O_RDWR | O_CREAT, 0644);
    SYS(::ftruncate(fd, 64 * kMiB));
    pwrite_all(fd, random_bytes(4096, 302), 32 * kMiB);
  }
  SYS(::mkdir((l + "/d").c_str(), 0755));
  write_file(l + "/d/x", "x");
  write_file(l + "/d/y", "y");
  SYS(::mkdir((l + "/d/sub").c_str(), 0755));
  write_file(l + "/d/sub/z", "z");
  SYS(::mkdir((l + "/e").c_str(), 0755));
  write_file(l + "/e/keep", "keep");
  write_file(l + "/h1", "linked");
  SYS(::link((l + "/h1").c_str(), (l + "/h2").c_str()));
  SYS(::symlink("a", (l + "/s").c_str()));
  SYS(::mknod((l + "/fifo").c_str(), S_IFIFO | 0644, 0));
}

// lower, upper, work and merged directories plus the mounts; the overlay is
// unmounted before the tmpfs, both before the fixture.
class Overlay {
 public:
  Overlay(MountedFs& fs, Lower lower, std::string opts) : opts_(std::move(opts)) {
    upper_ = fs.path("upper");
    work_ = fs.path("work");
    merged_ = fs.scratch() + "/merged";
    SYS(::mkdir(upper_.c_str(), 0755));
    SYS(::mkdir(work_.c_str(), 0755));
    SYS(::mkdir(merged_.c_str(), 0755));
    if (lower == Lower::OnFs) {
      lower_ = fs.path("lower");
      SYS(::mkdir(lower_.c_str(), 0755));
    } else {
      lower_ = fs.scratch() + "/lower";
      SYS(::mkdir(lower_.c_str(), 0755));
      tmpfs_ = std::make_unique<MountGuard>("tmpfs", lower_, "tmpfs", 0, "size=256m,mode=0755");
    }
    populate_lower(lower_);
  }
  void mount() {
    std::string data = fmt::format("lowerdir={},upperdir={},workdir={}", lower_, upper_, work_);
    if (!opts_.empty()) data += "," + opts_;
    ovl_ = std::make_unique<MountGuard>("overlay", merged_, "overlay", 0, data);
  }
  void unmount() {
    REQUIRE(ovl_);
    ovl_->unmount();
    ovl_.reset();
  }
  std::string m(const std::string& rel) const { return merged_ + "/" + rel; }
  std::string u(const std::string& rel) const { return upper_ + "/" + rel; }
  std::string l(const std::string& rel) const { return lower_ + "/" + rel; }
  const std::string& merged() const { return merged_; }
  const std::string& upper() const { return upper_; }
  const std::string& opts() const { return opts_; }
  bool index_on() const {
    auto mi = find_mount(merged_);
    return mi && mi->super_opts.find("index=on") != std::string::npos;
  }

 private:
  std::string opts_, lower_, upper_, work_, merged_;
  std::unique_ptr<MountGuard> tmpfs_;
  std::unique_ptr<MountGuard> ovl_;  // destroyed first
};

bool is_whiteout(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return false;
  return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

void remove_tree_via(const std::string& path) {
  struct stat st = lstat_of(path);
  if (S_ISDIR(st.st_mode)) {
    for (auto& e : list_dir(path)) remove_tree_via(path + "/" + e.name);
    SYS(::rmdir(path.c_str()));
  } else {
    SYS(::unlink(path.c_str()));
  }
}

// A mix of everything overlay does to the upper layer.
void mutate(Overlay& o) {
  {
    Fd fd = open_fd(o.m("a"), O_WRONLY | O_APPEND);
    pwrite_all(fd, "+upper", 0);
  }
  SYS(::chmod(o.m("b").c_str(), 0600));
  SYS(::unlink(o.m("d/x").c_str()));
  remove_tree_via(o.m("e"));
  SYS(::mkdir(o.m("e").c_str(), 0700));
  write_file(o.m("e/new"), "new in opaque e");
  SYS(::mkdir(o.m("newdir").c_str(), 0755));
  write_file(o.m("newdir/newfile"), random_bytes(100000, 303));
  SYS(::rename(o.m("h1").c_str(), o.m("h1-renamed").c_str()));
  {
    Fd fd = open_fd(o.m("sparse"), O_WRONLY);
    pwrite_all(fd, "S", 0);
  }
  SYS(::symlink("b", o.m("s2").c_str()));
  SYS(::mknod(o.m("fifo2").c_str(), S_IFIFO | 0600, 0));
  set_xattr(o.m("d"), "user.tag", "tagged");
  if (o.opts().find("redirect_dir=on") != std::string::npos)
    SYS(::rename(o.m("d").c_str(), o.m("d-renamed").c_str()));
}

}  // namespace

TEST_CASE("overlay: mounts and shows the lower layer", "[overlay]") {
  const Lower lower = GENERATE(Lower::OnFs, Lower::OnTmpfs);
  const std::string opts = GENERATE(as<std::string>{}, "", "redirect_dir=on", "index=off");
  INFO(lower_name(lower) << ", options '" << opts << "'");
  MountedFs fs;
  Overlay o(fs, lower, opts);
  o.mount();

  CHECK(list_names(o.merged()) == std::vector<std::string>{"a", "b", "big", "d", "e", "fifo", "h1", "h2", "s", "sparse"});
  CHECK_BYTES(read_file(o.m("a")), "lower a");
  CHECK_BYTES(read_file(o.m("d/sub/z")), "z");
  CHECK(content_digest(o.m("big")) == content_digest(o.l("big")));
  CHECK(content_digest(o.m("sparse")) == content_digest(o.l("sparse")));
  CHECK(lstat_of(o.m("sparse")).st_size == 64 * kMiB);
  CHECK_BYTES(get_xattr(o.m("a"), "user.lower"), "L");
  char buf[16] = {};
  CHECK_SYS(::readlink(o.m("s").c_str(), buf, sizeof buf), ==, 1);
  CHECK(S_ISFIFO(lstat_of(o.m("fifo")).st_mode));
  std::map<std::string, unsigned char> types;
  for (auto& e : list_dir(o.merged())) types[e.name] = e.type;
  CHECK(types["d"] == DT_DIR);
  CHECK(types["a"] == DT_REG);
  CHECK(types["s"] == DT_LNK);
  CHECK(types["fifo"] == DT_FIFO);
  // Nothing was copied up by looking.
  CHECK(list_names(o.upper()).empty());
}

TEST_CASE("overlay: writing copies a lower file up", "[overlay][copyup]") {
  const Lower lower = GENERATE(Lower::OnFs, Lower::OnTmpfs);
  const std::string opts = GENERATE(as<std::string>{}, "redirect_dir=on", "index=off");
  INFO(lower_name(lower) << ", options '" << opts << "'");
  MountedFs fs;
  Overlay o(fs, lower, opts);
  o.mount();

  {
    Fd fd = open_fd(o.m("a"), O_WRONLY | O_APPEND);
    pwrite_all(fd, "+upper", 0);
  }
  CHECK_BYTES(read_file(o.m("a")), "lower a+upper");
  REQUIRE(exists(o.u("a")));
  CHECK(S_ISREG(lstat_of(o.u("a")).st_mode));
  CHECK_BYTES(read_file(o.u("a")), "lower a+upper");
  CHECK_BYTES(read_file(o.l("a")), "lower a");
  CHECK_BYTES(get_xattr(o.u("a"), "user.lower"), "L");  // xattrs are copied up
  CHECK_BYTES(get_xattr(o.m("a"), "user.lower"), "L");

  // A big file: the whole content goes up, the change on top.
  std::string big = random_bytes(size_t(4 * kMiB), 301);
  {
    Fd fd = open_fd(o.m("big"), O_RDWR);
    pwrite_all(fd, "patched in the middle", kMiB + 3);
  }
  const std::string lower_big = big;
  big.replace(size_t(kMiB + 3), 21, "patched in the middle");
  CHECK_BYTES(read_file(o.m("big")), big);
  CHECK_BYTES(read_file(o.u("big")), big);
  CHECK_BYTES(read_file(o.l("big")), lower_big);

  // A sparse file.
  {
    Fd fd = open_fd(o.m("sparse"), O_WRONLY);
    pwrite_all(fd, "S", 0);
  }
  CHECK(lstat_of(o.u("sparse")).st_size == 64 * kMiB);
  {
    Fd fd = open_fd(o.m("sparse"), O_RDONLY);
    CHECK_BYTES(pread_all(fd, 1, 0), "S");
    CHECK_BYTES(pread_all(fd, 4096, 32 * kMiB), random_bytes(4096, 302));
    CHECK_BYTES(pread_all(fd, 4096, 16 * kMiB), std::string(4096, '\0'));
  }

  // O_TRUNC of a lower file.
  {
    Fd fd = open_fd(o.m("b"), O_WRONLY | O_TRUNC);
    pwrite_all(fd, "rewritten", 0);
  }
  CHECK_BYTES(read_file(o.u("b")), "rewritten");
  CHECK_BYTES(read_file(o.l("b")), "lower b");

  // New files live only in the upper layer.
  write_file(o.m("d/new"), "brand new");
  CHECK_BYTES(read_file(o.u("d/new")), "brand new");
  CHECK_FALSE(exists(o.l("d/new")));
  CHECK(S_ISDIR(lstat_of(o.u("d")).st_mode));
  CHECK(list_names(o.m("d")) == std::vector<std::string>{"new", "sub", "x", "y"});
}

TEST_CASE("overlay: chmod chown and setxattr copy up metadata", "[overlay][copyup]") {
  const Lower lower = GENERATE(Lower::OnFs, Lower::OnTmpfs);
  INFO(lower_name(lower));
  MountedFs fs;
  Overlay o(fs, lower, "");
  o.mount();

  SYS(::chmod(o.m("b").c_str(), 0600));
  CHECK((lstat_of(o.m("b")).st_mode & 07777) == 0600);
  REQUIRE(exists(o.u("b")));
  CHECK((lstat_of(o.u("b")).st_mode & 07777) == 0600);
  CHECK((lstat_of(o.l("b")).st_mode & 07777) == 0644);
  CHECK_BYTES(read_file(o.m("b")), "lower b");

  SYS(::chown(o.m("e/keep").c_str(), 1000, 1001));
  CHECK(lstat_of(o.m("e/keep")).st_uid == 1000);
  CHECK(S_ISDIR(lstat_of(o.u("e")).st_mode));
  CHECK(lstat_of(o.u("e/keep")).st_uid == 1000);
  CHECK(lstat_of(o.u("e/keep")).st_gid == 1001);
  CHECK(lstat_of(o.l("e/keep")).st_uid == 0);
  CHECK_BYTES(read_file(o.m("e/keep")), "keep");

  // A directory's metadata changes without hiding its lower entries.
  set_xattr(o.m("d"), "user.tag", "tagged");
  CHECK_BYTES(get_xattr(o.m("d"), "user.tag"), "tagged");
  CHECK_BYTES(get_xattr(o.u("d"), "user.tag"), "tagged");
  CHECK(get_xattr(o.l("d"), "user.tag") == std::nullopt);
  CHECK(list_names(o.m("d")) == std::vector<std::string>{"sub", "x", "y"});

  struct timespec ts[2] = {{1000, 1}, {2000, 2}};
  SYS(::utimensat(AT_FDCWD, o.m("h1").c_str(), ts, 0));
  CHECK(lstat_of(o.m("h1")).st_mtim.tv_sec == 2000);
  CHECK(lstat_of(o.m("h1")).st_mtim.tv_nsec == 2);
  CHECK(lstat_of(o.u("h1")).st_mtim.tv_sec == 2000);
  CHECK_BYTES(read_file(o.m("h1")), "linked");
}

TEST_CASE("overlay: unlink of a lower file leaves a whiteout", "[overlay][whiteout]") {
  const Lower lower = GENERATE(Lower::OnFs, Lower::OnTmpfs);
  const std::string opts = GENERATE(as<std::string>{}, "", "index=off");
  INFO(lower_name(lower) << ", options '" << opts << "'");
  MountedFs fs;
  Overlay o(fs, lower, opts);
  o.mount();

  SYS(::unlink(o.m("a").c_str()));
  struct stat st {};
  CHECK_ERRNO(::lstat(o.m("a").c_str(), &st), ENOENT);
  CHECK(is_whiteout(o.u("a")));
  CHECK_BYTES(read_file(o.l("a")), "lower a");
  auto names = list_names(o.merged());
  CHECK(std::find(names.begin(), names.end(), "a") == names.end());

  SYS(::unlink(o.m("d/x").c_str()));
  CHECK(is_whiteout(o.u("d/x")));
  CHECK(list_names(o.m("d")) == std::vector<std::string>{"sub", "y"});
  SYS(::unlink(o.m("s").c_str()));
  CHECK(is_whiteout(o.u("s")));

  // An upper-only file just goes away.
  write_file(o.m("only-upper"), "u");
  SYS(::unlink(o.m("only-upper").c_str()));
  CHECK_FALSE(exists(o.u("only-upper")));

  // The name can be used again.
  write_file(o.m("a"), "recreated");
  CHECK_BYTES(read_file(o.m("a")), "recreated");
  CHECK(S_ISREG(lstat_of(o.u("a")).st_mode));
  CHECK_BYTES(read_file(o.l("a")), "lower a");

  // A file made over a whiteout is an ordinary file: writes change its
  // mtime (overlayfs makes it in its work directory, as it does the file it
  // copies a lower file into; dhfs writes only the latter around the page
  // cache, and the kernel changes no times for such writes).
  SYS(::unlink(o.m("b").c_str()));
  {
    Fd fd = open_fd(o.m("b"), O_WRONLY | O_CREAT | O_EXCL, 0644);
    const struct timespec old_times[2] = {{1000, 0}, {1000, 0}};
    SYS(::futimens(fd, old_times));
    pwrite_all(fd, "made over a whiteout", 0);
    CHECK(fstat_of(fd).st_mtim.tv_sec > 1000);
  }
  CHECK(lstat_of(o.m("b")).st_mtim.tv_sec > 1000);
  CHECK_BYTES(read_file(o.m("b")), "made over a whiteout");
}

TEST_CASE("overlay: a removed and recreated directory is opaque", "[overlay][opaque]") {
  const Lower lower = GENERATE(Lower::OnFs, Lower::OnTmpfs);
  const std::string opts = GENERATE(as<std::string>{}, "", "redirect_dir=on");
  INFO(lower_name(lower) << ", options '" << opts << "'");
  MountedFs fs;
  Overlay o(fs, lower, opts);
  o.mount();

  CHECK_ERRNO(::rmdir(o.m("d").c_str()), ENOTEMPTY);
  remove_tree_via(o.m("d"));
  struct stat st {};
  CHECK_ERRNO(::lstat(o.m("d").c_str(), &st), ENOENT);
  CHECK(is_whiteout(o.u("d")));

  SYS(::mkdir(o.m("d").c_str(), 0755));
  REQUIRE(S_ISDIR(lstat_of(o.u("d")).st_mode));
  CHECK_BYTES(get_xattr(o.u("d"), "trusted.overlay.opaque"), "y");
  CHECK(list_names(o.m("d")).empty());
  CHECK_ERRNO(::lstat(o.m("d/x").c_str(), &st), ENOENT);
  write_file(o.m("d/fresh"), "fresh");
  CHECK(list_names(o.m("d")) == std::vector<std::string>{"fresh"});
  CHECK_BYTES(read_file(o.l("d/x")), "x");
  CHECK(list_names(o.l("d")) == std::vector<std::string>{"sub", "x", "y"});
}

TEST_CASE("overlay: renaming a lower directory with redirect_dir=on", "[overlay][redirect]") {
  const Lower lower = GENERATE(Lower::OnFs, Lower::OnTmpfs);
  INFO(lower_name(lower));
  MountedFs fs;
  Overlay o(fs, lower, "redirect_dir=on");
  o.mount();

  SYS(::rename(o.m("d").c_str(), o.m("d2").c_str()));
  struct stat st {};
  CHECK_ERRNO(::lstat(o.m("d").c_str(), &st), ENOENT);
  CHECK_BYTES(read_file(o.m("d2/x")), "x");
  CHECK_BYTES(read_file(o.m("d2/sub/z")), "z");
  CHECK(list_names(o.m("d2")) == std::vector<std::string>{"sub", "x", "y"});
  REQUIRE(S_ISDIR(lstat_of(o.u("d2")).st_mode));
  auto redirect = get_xattr(o.u("d2"), "trusted.overlay.redirect");
  REQUIRE(redirect.has_value());
  CHECK(*redirect == "d");
  CHECK(is_whiteout(o.u("d")));
  CHECK(exists(o.l("d/x")));

  // Into another directory: the redirect becomes absolute.
  SYS(::rename(o.m("d2").c_str(), o.m("e/d3").c_str()));
  CHECK_BYTES(read_file(o.m("e/d3/y")), "y");
  redirect = get_xattr(o.u("e/d3"), "trusted.overlay.redirect");
  REQUIRE(redirect.has_value());
  CHECK(*redirect == "/d");
  CHECK(list_names(o.m("e")) == std::vector<std::string>{"d3", "keep"});

  // Unmounted and mounted again, the redirect is still followed.
  o.unmount();
  o.mount();
  CHECK_BYTES(read_file(o.m("e/d3/sub/z")), "z");
  CHECK_ERRNO(::lstat(o.m("d").c_str(), &st), ENOENT);
}

TEST_CASE("overlay: without redirect_dir a lower directory rename is EXDEV", "[overlay][redirect]") {
  MountedFs fs;
  Overlay o(fs, Lower::OnFs, "redirect_dir=off");
  o.mount();
  CHECK_ERRNO(::rename(o.m("d").c_str(), o.m("d2").c_str()), EXDEV);
  CHECK(list_names(o.m("d")) == std::vector<std::string>{"sub", "x", "y"});
}

TEST_CASE("overlay: hard links in the lower layer", "[overlay][link]") {
  const Lower lower = GENERATE(Lower::OnFs, Lower::OnTmpfs);
  const std::string opts = GENERATE(as<std::string>{}, "", "index=off");
  INFO(lower_name(lower) << ", options '" << opts << "'");
  MountedFs fs;
  Overlay o(fs, lower, opts);
  o.mount();

  const struct stat h1 = lstat_of(o.m("h1"));
  const struct stat h2 = lstat_of(o.m("h2"));
  CHECK(h1.st_ino == h2.st_ino);
  CHECK(h1.st_dev == h2.st_dev);
  CHECK(h1.st_nlink == 2);
  CHECK_BYTES(read_file(o.m("h2")), "linked");

  {
    Fd fd = open_fd(o.m("h1"), O_WRONLY | O_APPEND);
    pwrite_all(fd, "+", 0);
  }
  CHECK_BYTES(read_file(o.m("h1")), "linked+");
  CHECK_BYTES(read_file(o.l("h1")), "linked");
  CHECK_BYTES(read_file(o.l("h2")), "linked");
  // With index=on the link survives copy-up; without, h2 keeps the lower data.
  CHECK_BYTES(read_file(o.m("h2")), o.index_on() ? "linked+" : "linked");

  // New hard links made through the overlay.
  SYS(::link(o.m("b").c_str(), o.m("b2").c_str()));
  CHECK_BYTES(read_file(o.m("b2")), "lower b");
  CHECK(lstat_of(o.u("b")).st_ino == lstat_of(o.u("b2")).st_ino);
  CHECK(lstat_of(o.u("b")).st_nlink == 2);
  CHECK(lstat_of(o.m("b2")).st_nlink == 2);
}

TEST_CASE("overlay: the merged view survives remounting the overlay", "[overlay][persist]") {
  const Lower lower = GENERATE(Lower::OnFs, Lower::OnTmpfs);
  const std::string opts = GENERATE(as<std::string>{}, "", "redirect_dir=on", "index=off");
  INFO(lower_name(lower) << ", options '" << opts << "'");
  MountedFs fs;
  Overlay o(fs, lower, opts);
  o.mount();
  mutate(o);
  SnapshotOptions so;
  so.inode_numbers = false;
  const Snapshot before = take_snapshot(o.merged(), so);
  CHECK(before.count("e/new") == 1);
  CHECK(before.count("e/keep") == 0);
  CHECK(before.count("d/x") + before.count("d-renamed/x") == 0);
  o.unmount();
  o.mount();
  check_same_snapshot(before, take_snapshot(o.merged(), so), "after remounting the overlay");
}

TEST_CASE("overlay: upper layer and merged view survive a remount of the filesystem", "[overlay][persist][dhfs]") {
  DHFS_ONLY();
  const Lower lower = GENERATE(Lower::OnFs, Lower::OnTmpfs);
  const std::string opts = GENERATE(as<std::string>{}, "", "redirect_dir=on", "index=off");
  INFO(lower_name(lower) << ", options '" << opts << "'");
  MountedFs fs;
  Overlay o(fs, lower, opts);
  o.mount();
  mutate(o);
  SnapshotOptions so;
  so.inode_numbers = false;
  const Snapshot merged = take_snapshot(o.merged(), so);
  o.unmount();
  const Snapshot upper = take_snapshot(o.upper());  // whiteouts, opaque and redirect xattrs
  fs.remount();
  check_same_snapshot(upper, take_snapshot(o.upper()), "upper layer after the remount");
  o.mount();
  check_same_snapshot(merged, take_snapshot(o.merged(), so), "merged view after the remount");
  // And the overlay keeps working.
  write_file(o.m("after"), "after remount");
  CHECK_BYTES(read_file(o.u("after")), "after remount");
}
