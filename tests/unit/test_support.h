// Shared helpers of the core unit tests (records, journal, checkpoint,
// filesystem, recovery): an in-memory device that outlives the FileSystem
// that owns it, format-and-open helpers, whole-file I/O through the core
// API, and a comparable snapshot of a whole tree.
//
// Catch2 assertions are not thread-safe: call the REQUIRE-ing helpers
// (open_fs, write_file, read_file, ...) only from the test thread.
#pragma once

#include <sys/types.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fs/control.h"
#include "fs/device.h"
#include "fs/filesystem.h"
#include "fs/format.h"
#include "fs/options.h"
#include "fs/records.h"

namespace dhfs::test {

inline constexpr Cred kRoot{0, 0};
inline constexpr std::uint64_t kDefaultDeviceBytes = 128ULL << 20;

// Called with every batch of I/O before it reaches the medium (on the
// submitting thread), so that a test can take a crash copy at an exact
// point, e.g. in the middle of a checkpoint. A negative return value fails
// the batch with that errno instead of performing it (an I/O error).
using IoHook = std::function<int(std::span<const DeviceIo>)>;

// A Device that forwards to a MemDevice shared with the test, so that the
// test keeps the medium after FileSystem (which owns its Device) is gone,
// and can inspect or corrupt its bytes.
class SharedMemDevice final : public Device {
 public:
  explicit SharedMemDevice(std::shared_ptr<MemDevice> mem, std::shared_ptr<IoHook> hook = nullptr)
      : mem_(std::move(mem)), hook_(std::move(hook)) {}
  int submit(std::span<const DeviceIo> ios) override {
    if (hook_ && *hook_)
      if (int rc = (*hook_)(ios); rc < 0) return rc;
    return mem_->submit(ios);
  }
  int flush() override { return mem_->flush(); }
  int discard(std::uint64_t offset, std::uint64_t len) override { return mem_->discard(offset, len); }
  int extend(std::uint64_t bytes) override { return mem_->extend(bytes); }
  std::uint64_t size_bytes() const override { return mem_->size_bytes(); }
  bool read_only() const override { return false; }
  std::string describe() const override { return "shared memory device"; }
  const std::shared_ptr<MemDevice>& medium() const { return mem_; }

 private:
  std::shared_ptr<MemDevice> mem_;
  std::shared_ptr<IoHook> hook_;
};

// A zeroed medium of `bytes`, formatted as a fresh dhfs (REQUIREs success).
std::shared_ptr<MemDevice> format_medium(std::uint64_t bytes = kDefaultDeviceBytes, Superblock* sb = nullptr);

// Opens the filesystem on `medium` (REQUIREs success).
std::unique_ptr<FileSystem> open_fs(const std::shared_ptr<MemDevice>& medium, const FsOptions& opts = {});
// Opens and returns the error instead (nullptr on failure). `hook`, if
// given, sees every I/O of the filesystem (set *hook later to arm it).
std::unique_ptr<FileSystem> try_open_fs(const std::shared_ptr<MemDevice>& medium, std::string& error,
                                        const FsOptions& opts = {}, std::shared_ptr<IoHook> hook = nullptr);

// format_medium + open_fs; the medium is returned through `medium` if given.
std::unique_ptr<FileSystem> make_fs(std::shared_ptr<MemDevice>* medium = nullptr,
                                    std::uint64_t bytes = kDefaultDeviceBytes, const FsOptions& opts = {});

// What a crash leaves: a copy of the medium's bytes as they are now, taken
// atomically with respect to the device's I/O (one read through submit).
std::shared_ptr<MemDevice> crash_copy(const std::shared_ptr<MemDevice>& medium);

// Runs `body` in a forked child process and returns its exit status (or -1
// if it had to be killed after `timeout`: a hang). Use it for checks that
// might hang the filesystem. The child must not use Catch2 assertions; it
// reports through its return value. Call it while this process runs no
// other threads of its own (no FileSystem open).
int run_in_child(const std::function<int()>& body, std::chrono::seconds timeout);

// ---- bytes

std::span<const std::byte> as_bytes(std::string_view s);
// Deterministic pseudo-random bytes (any value, NUL included).
std::string pattern(std::size_t len, std::uint64_t seed);

// ---- whole-file I/O through the core API. Each helper drops the kernel
// references it takes (forget), as the kernel would.

// Creates `name` in `parent` with `content`; returns its inode number.
Ino write_file(FileSystem& fs, Ino parent, std::string_view name, std::string_view content,
               std::uint32_t mode = 0644);
// Writes `content` at `off` into an existing file (open/write/release).
void write_at(FileSystem& fs, Ino ino, std::uint64_t off, std::string_view content);
// Reads [off, off+len) (short at end of file).
std::string read_at(FileSystem& fs, Ino ino, std::uint64_t off, std::size_t len);
// Reads the whole file (getattr size).
std::string read_file(FileSystem& fs, Ino ino);

// Looks up `name` (returns 0 and the errno in *err when absent), dropping
// the reference lookup took.
Ino lookup_ino(FileSystem& fs, Ino parent, std::string_view name, int* err = nullptr);
// Resolves a slash-separated path from the root ("" is the root).
Ino resolve(FileSystem& fs, std::string_view path);
Attr getattr_of(FileSystem& fs, Ino ino);
// Names in a directory (without "." and ".."), via readdir.
std::vector<std::string> list_dir(FileSystem& fs, Ino dir);

// Each file of `files` (path from the root -> content) reads back as it.
void require_files(FileSystem& fs, const std::map<std::string, std::string>& files);
// fsck.dhfs (the Checker, no repair) finds nothing wrong on `medium`.
void require_fsck_clean(MemDevice& medium);
// The end of a test's mount: REQUIREs a clean shutdown() and fsck of
// `medium`, mounts it again (fs is reset) and checks `files` there.
// Returns the new mount.
std::unique_ptr<FileSystem> remount_checked(std::unique_ptr<FileSystem>& fs, const std::shared_ptr<MemDevice>& medium,
                                            const std::map<std::string, std::string>& files);

// ---- control ioctls

// serve_control(fs, no request counts, root inode, cmd, admin) with `in` as
// what the caller passed; on success copies the reply into *out, whose size
// it must have (REQUIREd).
template <typename In, typename Out>
int control(FileSystem& fs, unsigned cmd, bool admin, const In& in, Out* out) {
  std::vector<std::byte> arg(sizeof in), reply;
  std::memcpy(arg.data(), &in, sizeof in);
  const int rc = serve_control(fs, nullptr, kRootIno, cmd, admin, arg, reply);
  if (rc == 0) {
    REQUIRE(reply.size() == sizeof *out);
    std::memcpy(out, reply.data(), sizeof *out);
  }
  return rc;
}

// ---- records

// Field-by-field equality of two records (string fields by content).
bool same_record(const Record& a, const Record& b);
std::string describe_record(const Record& r);

// ---- snapshots

struct NodeState {
  Ino ino = 0;
  std::uint32_t generation = 0;
  std::uint32_t mode = 0;
  std::uint32_t nlink = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint32_t rdev = 0;
  std::uint64_t size = 0;
  std::uint64_t blocks = 0;
  std::int64_t atime_ns = 0;  // only with SnapshotOptions::atime
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  std::uint8_t dtype = 0;     // as the parent's readdir reports it
  std::string link;           // symlink target
  std::map<std::string, std::string> xattrs;
  // Regular files: data ranges ([start, end) by SEEK_DATA/SEEK_HOLE) and
  // the XXH3-128 of the file's bytes (holes read and hashed as zeros
  // unless the file is larger than content_limit).
  std::vector<std::pair<std::uint64_t, std::uint64_t>> data;
  std::string content_hash;

  friend bool operator==(const NodeState&, const NodeState&) = default;
};

using Snapshot = std::map<std::string, NodeState>;  // path ("" = root) -> state

struct SnapshotOptions {
  bool atime = false;  // reads update atime, so it is left out by default
  std::uint64_t content_limit = 64ULL << 20;  // bigger files hash only their data ranges
};

// Walks the whole tree (readdir, lookup/getattr, readlink, listxattr/
// getxattr, read) into a map.
Snapshot snapshot(FileSystem& fs, const SnapshotOptions& opts = {});
// "" if equal, else a description of the first differences.
std::string diff(const Snapshot& a, const Snapshot& b, std::size_t max_lines = 10);

}  // namespace dhfs::test
