// Recursive snapshots of a directory tree, for "did everything survive" checks.
#pragma once

#include <map>
#include <string>

namespace dhfs_test {

struct SnapshotOptions {
  bool inode_numbers = true;  // include st_ino (stable across dhfs remounts)
  bool ctime = true;          // include st_ctim
};

// relative path ("" for the root) -> one line describing the object: type, mode,
// uid, gid, nlink, size, rdev, mtime/ctime in ns, symlink target, every xattr
// (name and value) and a digest of the content of regular files.
using Snapshot = std::map<std::string, std::string>;

Snapshot take_snapshot(const std::string& root, SnapshotOptions opts = {});

// CHECKs that two snapshots are identical, reporting differing paths one by one.
void check_same_snapshot(const Snapshot& before, const Snapshot& after, const std::string& what);

}  // namespace dhfs_test
