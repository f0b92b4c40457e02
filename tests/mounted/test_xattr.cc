// Extended attributes in the user., trusted. and security. namespaces.
#include <fmt/format.h>
#include <sys/xattr.h>

#include "fixture.h"

using namespace dhfs_test;

TEST_CASE("xattrs in the user and trusted and security namespaces", "[xattr]") {
  MountedFs fs;
  const std::string p = fs.path("f");
  write_file(p, "data");
  CHECK(list_xattrs(p).empty());

  set_xattr(p, "user.color", "blue");
  set_xattr(p, "trusted.overlay.opaque", "y");
  set_xattr(p, "security.dhfs-test", std::string("bin\0ary", 7));
  set_xattr(p, "user.empty", "");
  CHECK_BYTES(get_xattr(p, "user.color"), "blue");
  CHECK_BYTES(get_xattr(p, "trusted.overlay.opaque"), "y");
  CHECK_BYTES(get_xattr(p, "security.dhfs-test"), std::string("bin\0ary", 7));
  CHECK_BYTES(get_xattr(p, "user.empty"), "");
  CHECK(get_xattr(p, "user.missing") == std::nullopt);
  CHECK(list_xattrs(p) == std::vector<std::string>{"security.dhfs-test", "trusted.overlay.opaque",
                                                   "user.color", "user.empty"});
  // Replace a value with a longer and then a shorter one.
  set_xattr(p, "user.color", "a much longer value than before");
  CHECK_BYTES(get_xattr(p, "user.color"), "a much longer value than before");
  set_xattr(p, "user.color", "red");
  CHECK_BYTES(get_xattr(p, "user.color"), "red");

  // The content and other metadata are untouched.
  CHECK_BYTES(read_file(p), "data");

  // removexattr.
  SYS(::removexattr(p.c_str(), "user.color"));
  CHECK(get_xattr(p, "user.color") == std::nullopt);
  CHECK_ERRNO(::removexattr(p.c_str(), "user.color"), ENODATA);
  CHECK_ERRNO(::removexattr(p.c_str(), "trusted.never-set"), ENODATA);
  SYS(::removexattr(p.c_str(), "trusted.overlay.opaque"));
  SYS(::removexattr(p.c_str(), "security.dhfs-test"));
  CHECK(list_xattrs(p) == std::vector<std::string>{"user.empty"});
  CHECK_ERRNO(::getxattr(fs.path("missing").c_str(), "user.x", nullptr, 0), ENOENT);
  char buf[16];
  CHECK_ERRNO(::getxattr(p.c_str(), "user.color", buf, sizeof buf), ENODATA);
}

TEST_CASE("XATTR_CREATE and XATTR_REPLACE", "[xattr]") {
  MountedFs fs;
  const std::string p = fs.path("f");
  write_file(p, "");
  CHECK_ERRNO(::setxattr(p.c_str(), "user.a", "1", 1, XATTR_REPLACE), ENODATA);
  CHECK(get_xattr(p, "user.a") == std::nullopt);
  SYS(::setxattr(p.c_str(), "user.a", "1", 1, XATTR_CREATE));
  CHECK_ERRNO(::setxattr(p.c_str(), "user.a", "2", 1, XATTR_CREATE), EEXIST);
  CHECK_BYTES(get_xattr(p, "user.a"), "1");
  SYS(::setxattr(p.c_str(), "user.a", "22", 2, XATTR_REPLACE));
  CHECK_BYTES(get_xattr(p, "user.a"), "22");
  CHECK_ERRNO(::setxattr(p.c_str(), "trusted.t", "1", 1, XATTR_REPLACE), ENODATA);
  SYS(::setxattr(p.c_str(), "trusted.t", "1", 1, XATTR_CREATE));
  CHECK_ERRNO(::setxattr(p.c_str(), "trusted.t", "1", 1, XATTR_CREATE), EEXIST);
  SYS(::removexattr(p.c_str(), "user.a"));
  CHECK_ERRNO(::setxattr(p.c_str(), "user.a", "3", 1, XATTR_REPLACE), ENODATA);
  SYS(::setxattr(p.c_str(), "user.a", "3", 1, XATTR_CREATE));
  CHECK_BYTES(get_xattr(p, "user.a"), "3");
}

TEST_CASE("xattr size queries and ERANGE", "[xattr]") {
  MountedFs fs;
  const std::string p = fs.path("f");
  write_file(p, "");
  set_xattr(p, "user.val", "0123456789");
  set_xattr(p, "user.other", "x");
  CHECK_SYS(::getxattr(p.c_str(), "user.val", nullptr, 0), ==, 10);
  char small[4];
  CHECK_ERRNO(::getxattr(p.c_str(), "user.val", small, sizeof small), ERANGE);
  char exact[10];
  CHECK_SYS(::getxattr(p.c_str(), "user.val", exact, sizeof exact), ==, 10);
  CHECK(std::string(exact, 10) == "0123456789");

  const ssize_t need = SYS(::listxattr(p.c_str(), nullptr, 0));
  CHECK(need == ssize_t(sizeof("user.val") + sizeof("user.other")));
  std::string list(size_t(need), '\0');
  CHECK_SYS(::listxattr(p.c_str(), list.data(), list.size()), ==, need);
  CHECK_ERRNO(::listxattr(p.c_str(), list.data(), size_t(need - 1)), ERANGE);

  // f-variants on an open fd.
  Fd fd = open_fd(p, O_RDONLY);
  SYS(::fsetxattr(fd, "user.fd", "via fd", 6, 0));
  char buf[16];
  CHECK_SYS(::fgetxattr(fd, "user.fd", buf, sizeof buf), ==, 6);
  CHECK_SYS(::flistxattr(fd, nullptr, 0), ==, need + ssize_t(sizeof("user.fd")));
  SYS(::fremovexattr(fd, "user.fd"));
  CHECK(get_xattr(p, "user.fd") == std::nullopt);

  // A 255-byte name is the longest allowed.
  std::string longname = "user." + std::string(250, 'n');
  set_xattr(p, longname, "long");
  CHECK_BYTES(get_xattr(p, longname), "long");
  std::string toolong = "user." + std::string(251, 'n');
  CHECK_ERRNO(::setxattr(p.c_str(), toolong.c_str(), "x", 1, 0), ERANGE);
}

TEST_CASE("64 KiB xattr values", "[xattr]") {
  MountedFs fs;
  const std::string p = fs.path("f");
  write_file(p, "");
  const std::string v1 = random_bytes(65536, 11);
  set_xattr(p, "user.big", v1);
  CHECK_SYS(::getxattr(p.c_str(), "user.big", nullptr, 0), ==, 65536);
  CHECK_BYTES(get_xattr(p, "user.big"), v1);
  const std::string v2 = random_bytes(65536, 12);
  set_xattr(p, "user.big", v2);
  CHECK_BYTES(get_xattr(p, "user.big"), v2);
  set_xattr(p, "trusted.big", v1);
  CHECK_BYTES(get_xattr(p, "trusted.big"), v1);

  // One byte more fails cleanly and changes nothing.
  const std::string v3 = random_bytes(65537, 13);
  REQUIRE_ERRNO_IN(::setxattr(p.c_str(), "user.big", v3.data(), v3.size(), 0), E2BIG, ENOSPC);
  REQUIRE_ERRNO_IN(::setxattr(p.c_str(), "user.new", v3.data(), v3.size(), 0), E2BIG, ENOSPC);
  CHECK_BYTES(get_xattr(p, "user.big"), v2);
  CHECK(get_xattr(p, "user.new") == std::nullopt);
  CHECK(list_xattrs(p) == std::vector<std::string>{"trusted.big", "user.big"});

  // Shrinking a big value.
  set_xattr(p, "user.big", "small");
  CHECK_BYTES(get_xattr(p, "user.big"), "small");
}

TEST_CASE("1000 xattrs on one file", "[xattr]") {
  MountedFs fs;
  const std::string p = fs.path("f");
  write_file(p, "content");
  constexpr int kN = 1000;
  auto value = [](int i) { return fmt::format("value-{}-{}", i, std::string(size_t(i % 50), 'v')); };
  std::vector<std::string> names;
  for (int i = 0; i < kN; ++i) {
    names.push_back(fmt::format("user.attr-{:04d}", i));
    set_xattr(p, names.back(), value(i), XATTR_CREATE);
  }
  std::sort(names.begin(), names.end());
  CHECK(list_xattrs(p) == names);
  int bad = 0;
  for (int i = 0; i < kN; ++i)
    if (get_xattr(p, fmt::format("user.attr-{:04d}", i)) != value(i)) ++bad;
  CHECK(bad == 0);

  // Remove the even ones.
  for (int i = 0; i < kN; i += 2) SYS(::removexattr(p.c_str(), fmt::format("user.attr-{:04d}", i).c_str()));
  std::vector<std::string> odd;
  for (int i = 1; i < kN; i += 2) odd.push_back(fmt::format("user.attr-{:04d}", i));
  CHECK(list_xattrs(p) == odd);
  CHECK(get_xattr(p, "user.attr-0000") == std::nullopt);
  CHECK_BYTES(get_xattr(p, "user.attr-0999"), value(999));
  CHECK_BYTES(read_file(p), "content");
}

TEST_CASE("xattrs on directories and symlinks and special files and hard links", "[xattr]") {
  MountedFs fs;
  write_file(fs.path("f"), "");
  SYS(::mkdir(fs.path("d").c_str(), 0755));
  SYS(::symlink("f", fs.path("l").c_str()));
  SYS(::mknod(fs.path("fifo").c_str(), S_IFIFO | 0644, 0));
  SYS(::link(fs.path("f").c_str(), fs.path("hl").c_str()));

  set_xattr(fs.path("d"), "user.dir", "d");
  set_xattr(fs.path("d"), "trusted.overlay.opaque", "y");
  CHECK_BYTES(get_xattr(fs.path("d"), "trusted.overlay.opaque"), "y");
  CHECK(list_xattrs(fs.path("d")) == std::vector<std::string>{"trusted.overlay.opaque", "user.dir"});

  // user.* is refused on symlinks and special files; trusted.* works.
  CHECK_ERRNO(::lsetxattr(fs.path("l").c_str(), "user.x", "1", 1, 0), EPERM);
  CHECK_ERRNO(::lsetxattr(fs.path("fifo").c_str(), "user.x", "1", 1, 0), EPERM);
  set_xattr(fs.path("l"), "trusted.link", "on the link");
  set_xattr(fs.path("fifo"), "trusted.fifo", "on the fifo");
  CHECK_BYTES(get_xattr(fs.path("l"), "trusted.link"), "on the link");
  CHECK_BYTES(get_xattr(fs.path("fifo"), "trusted.fifo"), "on the fifo");
  CHECK(list_xattrs(fs.path("l")) == std::vector<std::string>{"trusted.link"});

  // The non-l variants follow the symlink.
  SYS(::setxattr(fs.path("l").c_str(), "user.via-link", "target", 6, 0));
  CHECK_BYTES(get_xattr(fs.path("f"), "user.via-link"), "target");
  CHECK(get_xattr(fs.path("l"), "user.via-link") == std::nullopt);
  CHECK(list_xattrs(fs.path("f")) == std::vector<std::string>{"user.via-link"});

  // Hard links share the attributes.
  CHECK_BYTES(get_xattr(fs.path("hl"), "user.via-link"), "target");
  set_xattr(fs.path("hl"), "user.from-hl", "1");
  CHECK_BYTES(get_xattr(fs.path("f"), "user.from-hl"), "1");
}
