// rename(2) and renameat2(2) with RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT.
#include <linux/fs.h>
#include <stdio.h>
#include <sys/sysmacros.h>

#include "fixture.h"

using namespace dhfs_test;

namespace {

int rename2(const std::string& from, const std::string& to, unsigned flags) {
  return ::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags);
}

}  // namespace

TEST_CASE("rename a file", "[rename]") {
  MountedFs fs;
  SYS(::mkdir(fs.path("d").c_str(), 0755));
  write_file(fs.path("a"), "content of a");
  const struct stat a = lstat_of(fs.path("a"));
  struct timespec old[2] = {{1000, 0}, {1000, 0}};
  SYS(::utimensat(AT_FDCWD, fs.root().c_str(), old, 0));
  tick();

  SYS(::rename(fs.path("a").c_str(), fs.path("b").c_str()));
  struct stat st {};
  CHECK_ERRNO(::lstat(fs.path("a").c_str(), &st), ENOENT);
  const struct stat b = lstat_of(fs.path("b"));
  CHECK(b.st_ino == a.st_ino);
  CHECK(b.st_nlink == 1);
  CHECK(ns_of(b.st_ctim) > ns_of(a.st_ctim));  // the renamed inode's ctime changes
  CHECK_BYTES(read_file(fs.path("b")), "content of a");
  CHECK(lstat_of(fs.root()).st_mtim.tv_sec > 1000);  // the directory changed
  CHECK(list_names(fs.root()) == std::vector<std::string>{"b", "d"});

  // Into a subdirectory.
  SYS(::rename(fs.path("b").c_str(), fs.path("d/b").c_str()));
  CHECK(lstat_of(fs.path("d/b")).st_ino == a.st_ino);
  CHECK(list_names(fs.path("d")) == std::vector<std::string>{"b"});
  CHECK(list_names(fs.root()) == std::vector<std::string>{"d"});

  // Over an existing file: the old target lives on only through an open fd.
  write_file(fs.path("victim"), "victim data");
  Fd victim = open_fd(fs.path("victim"), O_RDONLY);
  SYS(::rename(fs.path("d/b").c_str(), fs.path("victim").c_str()));
  CHECK_BYTES(read_file(fs.path("victim")), "content of a");
  CHECK(lstat_of(fs.path("victim")).st_ino == a.st_ino);
  CHECK(fstat_of(victim).st_nlink == 0);
  CHECK_BYTES(pread_all(victim, 100, 0), "victim data");
  victim.reset();

  // Renaming onto itself, or onto another name of the same inode, does nothing.
  SYS(::rename(fs.path("victim").c_str(), fs.path("victim").c_str()));
  CHECK(exists(fs.path("victim")));
  SYS(::link(fs.path("victim").c_str(), fs.path("alias").c_str()));
  SYS(::rename(fs.path("victim").c_str(), fs.path("alias").c_str()));
  CHECK(exists(fs.path("victim")));
  CHECK(exists(fs.path("alias")));
  CHECK(lstat_of(fs.path("alias")).st_nlink == 2);

  // Errors.
  SYS(::mkdir(fs.path("dir").c_str(), 0755));
  CHECK_ERRNO(::rename(fs.path("missing").c_str(), fs.path("x").c_str()), ENOENT);
  CHECK_ERRNO(::rename(fs.path("alias").c_str(), fs.path("nodir/x").c_str()), ENOENT);
  CHECK_ERRNO(::rename(fs.path("alias").c_str(), fs.path("victim/x").c_str()), ENOTDIR);
  CHECK_ERRNO(::rename(fs.path("alias").c_str(), fs.path("dir").c_str()), EISDIR);
  CHECK_ERRNO(::rename(fs.path("dir").c_str(), fs.path("alias").c_str()), ENOTDIR);
  CHECK(S_ISDIR(lstat_of(fs.path("dir")).st_mode));
  CHECK(S_ISREG(lstat_of(fs.path("alias")).st_mode));

  // A symlink is renamed, not its target.
  SYS(::symlink("alias", fs.path("sl").c_str()));
  SYS(::rename(fs.path("sl").c_str(), fs.path("sl2").c_str()));
  CHECK(S_ISLNK(lstat_of(fs.path("sl2")).st_mode));
  CHECK_BYTES(read_file(fs.path("sl2")), "content of a");
}

TEST_CASE("rename directories", "[rename]") {
  MountedFs fs;
  SYS(::mkdir(fs.path("a").c_str(), 0755));
  SYS(::mkdir(fs.path("b").c_str(), 0755));
  SYS(::mkdir(fs.path("a/d").c_str(), 0700));
  write_file(fs.path("a/d/x"), "x in d");
  SYS(::mkdir(fs.path("a/d/sub").c_str(), 0755));
  const ino_t d_ino = lstat_of(fs.path("a/d")).st_ino;
  CHECK(lstat_of(fs.path("a")).st_nlink == 3);
  CHECK(lstat_of(fs.path("b")).st_nlink == 2);

  // Move to another parent: link counts and ".." follow.
  SYS(::rename(fs.path("a/d").c_str(), fs.path("b/d").c_str()));
  CHECK(lstat_of(fs.path("a")).st_nlink == 2);
  CHECK(lstat_of(fs.path("b")).st_nlink == 3);
  CHECK(lstat_of(fs.path("b/d")).st_ino == d_ino);
  CHECK(lstat_of(fs.path("b/d")).st_nlink == 3);
  CHECK(stat_of(fs.path("b/d/..")).st_ino == lstat_of(fs.path("b")).st_ino);
  CHECK(stat_of(fs.path("b/d/sub/../..")).st_ino == lstat_of(fs.path("b")).st_ino);
  CHECK_BYTES(read_file(fs.path("b/d/x")), "x in d");
  CHECK(list_names(fs.path("a")).empty());

  // Over an empty directory.
  SYS(::mkdir(fs.path("b/e").c_str(), 0755));
  const ino_t e_ino = lstat_of(fs.path("b/e")).st_ino;
  SYS(::rename(fs.path("b/d").c_str(), fs.path("b/e").c_str()));
  CHECK(lstat_of(fs.path("b/e")).st_ino == d_ino);
  CHECK(lstat_of(fs.path("b/e")).st_ino != e_ino);
  CHECK_BYTES(read_file(fs.path("b/e/x")), "x in d");
  CHECK(list_names(fs.path("b")) == std::vector<std::string>{"e"});
  CHECK(lstat_of(fs.path("b")).st_nlink == 3);

  // Over a non-empty directory.
  SYS(::mkdir(fs.path("full").c_str(), 0755));
  write_file(fs.path("full/y"), "y");
  CHECK_ERRNO(::rename(fs.path("b/e").c_str(), fs.path("full").c_str()), ENOTEMPTY);
  CHECK_BYTES(read_file(fs.path("full/y")), "y");
  CHECK_BYTES(read_file(fs.path("b/e/x")), "x in d");

  // A directory into itself or its own subtree.
  CHECK_ERRNO(::rename(fs.path("b/e").c_str(), fs.path("b/e/sub/new").c_str()), EINVAL);
  CHECK_ERRNO(::rename(fs.path("b/e").c_str(), fs.path("b/e/new").c_str()), EINVAL);
  CHECK_ERRNO(::rename(fs.path("b").c_str(), fs.path("b/e/sub/new").c_str()), EINVAL);
  CHECK(lstat_of(fs.path("b/e")).st_ino == d_ino);

  // Rename within the same parent keeps the parent's link count.
  SYS(::rename(fs.path("b/e").c_str(), fs.path("b/renamed").c_str()));
  CHECK(lstat_of(fs.path("b")).st_nlink == 3);
  CHECK_BYTES(read_file(fs.path("b/renamed/x")), "x in d");
  CHECK(stat_of(fs.path("b/renamed/sub/..")).st_ino == d_ino);
}

TEST_CASE("renameat2 RENAME_NOREPLACE", "[rename]") {
  MountedFs fs;
  write_file(fs.path("a"), "a");
  write_file(fs.path("b"), "b");
  SYS(::mkdir(fs.path("d").c_str(), 0755));
  CHECK_ERRNO(rename2(fs.path("a"), fs.path("b"), RENAME_NOREPLACE), EEXIST);
  CHECK_ERRNO(rename2(fs.path("a"), fs.path("d"), RENAME_NOREPLACE), EEXIST);
  CHECK_BYTES(read_file(fs.path("a")), "a");
  CHECK_BYTES(read_file(fs.path("b")), "b");
  SYS(rename2(fs.path("a"), fs.path("c"), RENAME_NOREPLACE));
  CHECK_BYTES(read_file(fs.path("c")), "a");
  CHECK_FALSE(exists(fs.path("a")));
  SYS(rename2(fs.path("d"), fs.path("d2"), RENAME_NOREPLACE));
  CHECK(S_ISDIR(lstat_of(fs.path("d2")).st_mode));
  CHECK_ERRNO(rename2(fs.path("c"), fs.path("x"), RENAME_NOREPLACE | RENAME_EXCHANGE), EINVAL);
}

TEST_CASE("renameat2 RENAME_EXCHANGE of a file and a directory", "[rename]") {
  MountedFs fs;
  SYS(::mkdir(fs.path("p").c_str(), 0755));
  SYS(::mkdir(fs.path("q").c_str(), 0755));
  write_file(fs.path("p/a"), "file a");
  SYS(::mkdir(fs.path("q/b").c_str(), 0750));
  write_file(fs.path("q/b/inside"), "inside b");
  const ino_t a_ino = lstat_of(fs.path("p/a")).st_ino;
  const ino_t b_ino = lstat_of(fs.path("q/b")).st_ino;
  CHECK(lstat_of(fs.path("p")).st_nlink == 2);
  CHECK(lstat_of(fs.path("q")).st_nlink == 3);

  SYS(rename2(fs.path("p/a"), fs.path("q/b"), RENAME_EXCHANGE));
  const struct stat pa = lstat_of(fs.path("p/a"));
  const struct stat qb = lstat_of(fs.path("q/b"));
  CHECK(S_ISDIR(pa.st_mode));
  CHECK(pa.st_ino == b_ino);
  CHECK((pa.st_mode & 07777) == 0750);
  CHECK(S_ISREG(qb.st_mode));
  CHECK(qb.st_ino == a_ino);
  CHECK_BYTES(read_file(fs.path("q/b")), "file a");
  CHECK_BYTES(read_file(fs.path("p/a/inside")), "inside b");
  CHECK(stat_of(fs.path("p/a/..")).st_ino == lstat_of(fs.path("p")).st_ino);
  CHECK(lstat_of(fs.path("p")).st_nlink == 3);
  CHECK(lstat_of(fs.path("q")).st_nlink == 2);
  CHECK(list_names(fs.path("p")) == std::vector<std::string>{"a"});
  CHECK(list_names(fs.path("q")) == std::vector<std::string>{"b"});

  // Two files in one directory.
  write_file(fs.path("p/x"), "xxx");
  write_file(fs.path("p/y"), "yyyyy");
  SYS(rename2(fs.path("p/x"), fs.path("p/y"), RENAME_EXCHANGE));
  CHECK_BYTES(read_file(fs.path("p/x")), "yyyyy");
  CHECK_BYTES(read_file(fs.path("p/y")), "xxx");

  CHECK_ERRNO(rename2(fs.path("p/x"), fs.path("p/missing"), RENAME_EXCHANGE), ENOENT);
  CHECK_ERRNO(rename2(fs.path("p/missing"), fs.path("p/x"), RENAME_EXCHANGE), ENOENT);
  // A directory cannot be exchanged into its own subtree.
  CHECK_ERRNO(rename2(fs.path("p"), fs.path("p/a/inside"), RENAME_EXCHANGE), EINVAL);
}

TEST_CASE("renameat2 RENAME_WHITEOUT leaves a 0:0 character device", "[rename]") {
  MountedFs fs;
  write_file(fs.path("a"), "a data");
  write_file(fs.path("c"), "c data");
  SYS(::mkdir(fs.path("dir").c_str(), 0755));
  write_file(fs.path("dir/x"), "x");
  const ino_t a_ino = lstat_of(fs.path("a")).st_ino;

  SYS(rename2(fs.path("a"), fs.path("b"), RENAME_WHITEOUT));
  struct stat wo = lstat_of(fs.path("a"));
  CHECK(S_ISCHR(wo.st_mode));
  CHECK(wo.st_rdev == makedev(0, 0));
  CHECK(wo.st_ino != a_ino);
  CHECK(lstat_of(fs.path("b")).st_ino == a_ino);
  CHECK_BYTES(read_file(fs.path("b")), "a data");

  // Over an existing target.
  SYS(rename2(fs.path("c"), fs.path("b"), RENAME_WHITEOUT));
  wo = lstat_of(fs.path("c"));
  CHECK(S_ISCHR(wo.st_mode));
  CHECK(wo.st_rdev == makedev(0, 0));
  CHECK_BYTES(read_file(fs.path("b")), "c data");

  // Directories too (overlayfs does this).
  SYS(rename2(fs.path("dir"), fs.path("dir2"), RENAME_WHITEOUT));
  wo = lstat_of(fs.path("dir"));
  CHECK(S_ISCHR(wo.st_mode));
  CHECK(wo.st_rdev == makedev(0, 0));
  CHECK_BYTES(read_file(fs.path("dir2/x")), "x");

  CHECK(list_names(fs.root()) == std::vector<std::string>{"a", "b", "c", "dir", "dir2"});
  CHECK_ERRNO(rename2(fs.path("b"), fs.path("z"), RENAME_WHITEOUT | RENAME_EXCHANGE), EINVAL);
  // The whiteout is an ordinary node that can be removed.
  SYS(::unlink(fs.path("a").c_str()));
  CHECK_FALSE(exists(fs.path("a")));
}
