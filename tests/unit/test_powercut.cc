// Power-cut simulation (in the spirit of CrashMonkey and ALICE).
//
// A workload (creates, overwrites, appends, truncates, hole punches,
// preallocation, xattrs, hard links, symlinks, unlinks, renames, mkdir and
// rmdir, clones by copy_file_range of whole blocks and copy-on-write writes
// to them, new files that copy another's bytes (dedup shares them), fsync,
// syncfs, checkpoints) runs through the FileSystem API on
// a RecordingDevice, which logs every write and flush in order. After every
// operation the test walks the live tree (the "states"), and it notes what was acknowledged durable:
// syncfs() makes the whole state durable, fsync(file) + fsync(parent) that
// file's name, contents and xattrs.
//
// Crash images are then built from the formatted image plus a prefix of the
// log, cut at every flush (just before and just after it) and at random
// points between flushes. Writes after the last flush before the cut were
// not yet durable: the block layer may have lost any of them or written
// them in any order, each 4 KiB block atomically, so a random subset of
// their blocks is applied in a random order (sometimes all, sometimes none).
// For every crash image:
//   - fsck (the library, read-only; it replays the journal in memory as
//     mount does) reports it clean;
//   - FileSystem::open succeeds;
//   - every path is in a state the workload could have left there: for each
//     path, the states from its last durability point up to the operation
//     in progress at the cut are the candidates; presence, type, size, link
//     count, xattrs and symlink target equal one candidate's, and every
//     4 KiB block of a file equals that block of some candidate (in-place
//     overwrites not yet durable may land block by block). A path no
//     operation touched since its durability point therefore must be
//     exactly as it was then.
//   - every few images, the recovered filesystem is started, written,
//     synced and shut down, and must be clean and hold it all afterwards.
//
// Counts: DHFS_POWERCUT_STATES (default 3000; 1000 in sanitizer builds) crash
// states are checked in total, e.g. DHFS_POWERCUT_STATES=100000 for a long
// run. DHFS_POWERCUT_SEED fixes the seed (default: random, printed); a
// failure prints the seed, workload and state that reproduce it.
#include <fcntl.h>
#include <linux/falloc.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <condition_variable>
#include <mutex>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fs/filesystem.h"
#include "fs/fsck.h"
#include "fs/inode.h"
#include "fs/records.h"
#include "tests/unit/crash_devices.h"
#include "tests/unit/test_support.h"

namespace dhfs {
namespace {

using test::as_bytes;
using test::kRoot;
using test::DeviceRef;
using test::OverlayDevice;
using test::pattern;
using test::RecordingDevice;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(undefined_behavior_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

std::uint64_t env_u64(const char* name, std::uint64_t dflt) {
  const char* v = std::getenv(name);
  if (!v || !*v) return dflt;
  return std::strtoull(v, nullptr, 0);
}

// ---------------------------------------------------------------- trees

struct Node {
  std::uint32_t type = 0;  // S_IFMT bits
  Ino ino = 0;  // identity: an in-place write shows under every name of the file
  std::uint64_t generation = 0;
  std::uint64_t size = 0;
  std::uint32_t nlink = 0;
  std::string data;  // regular files
  std::string target;  // symlinks
  std::map<std::string, std::string> xattrs;
  bool operator==(const Node&) const = default;
};
using NodeRef = std::shared_ptr<const Node>;
using Tree = std::map<std::string, NodeRef>;  // path ("" = root) -> node

// Walks the tree through the API; returns "" or what failed. Nodes equal to
// those of `prev` are shared with it (states cost only what changed).
std::string walk(FileSystem& fs, Tree& out, const Tree* prev = nullptr) {
  out.clear();
  std::vector<std::pair<std::string, Ino>> todo{{"", kRootIno}};
  AlignedBuffer scratch;
  while (!todo.empty()) {
    auto [path, ino] = todo.back();
    todo.pop_back();
    Attr a;
    if (int rc = fs.getattr(ino, &a); rc) return "getattr " + path + ": " + std::strerror(-rc);
    auto n = std::make_shared<Node>();
    n->type = a.mode & S_IFMT;
    n->ino = a.ino;
    n->generation = a.generation;
    n->nlink = a.nlink;
    if (S_ISREG(a.mode)) {
      n->size = a.size;
      while (n->data.size() < a.size) {
        std::span<const std::byte> got;
        if (int rc = fs.read(ino, n->data.size(), a.size - n->data.size(), scratch, &got); rc)
          return "read " + path + ": " + std::strerror(-rc);
        if (got.empty()) return "read " + path + ": short";
        n->data.append(reinterpret_cast<const char*>(got.data()), got.size());
      }
    } else if (S_ISLNK(a.mode)) {
      if (int rc = fs.readlink(ino, &n->target); rc) return "readlink " + path;
    }
    std::string names;
    if (int rc = fs.listxattr(ino, &names); rc < 0) return "listxattr " + path + ": " + std::strerror(-rc);
    for (std::size_t at = 0; at < names.size();) {
      std::string name(names.c_str() + at);
      at += name.size() + 1;
      std::string v;
      if (int rc = fs.getxattr(ino, name, &v); rc < 0) return "getxattr " + path + " " + name;
      n->xattrs[name] = v;
    }
    if (S_ISDIR(a.mode)) {
      std::vector<std::string> entries;
      int rc = fs.readdir(ino, 0, false, [&](const DirListEntry& e, const Attr*) {
        if (e.name != "." && e.name != "..") entries.emplace_back(e.name);
        return true;
      });
      if (rc) return "readdir " + path + ": " + std::strerror(-rc);
      for (const std::string& e : entries) {
        Attr c;
        if (int lrc = fs.lookup(ino, e, &c); lrc) return "lookup " + path + "/" + e + ": " + std::strerror(-lrc);
        fs.forget(c.ino, 1);
        todo.emplace_back(path.empty() ? e : path + "/" + e, c.ino);
      }
    }
    if (prev) {
      if (auto it = prev->find(path); it != prev->end() && *it->second == *n) {
        out[path] = it->second;
        continue;
      }
    }
    out[path] = std::move(n);
  }
  return "";
}

// --------------------------------------------------------------- workload

struct Durable {
  std::size_t pos = 0;    // log position when it was acknowledged
  std::size_t state = 0;  // the state that became durable
  std::optional<std::string> path;  // none: everything (syncfs)
};

struct Recorded {
  std::vector<std::byte> base;  // the formatted image before the workload
  std::vector<test::LoggedIo> log;
  std::vector<Tree> states;          // states[0]: before the first operation
  std::vector<std::size_t> begins;   // begins[k]: log position when operation k started (k >= 1)
  std::vector<Durable> durable;
  std::vector<std::string> ops;      // ops[k]: what operation k did
  std::size_t flushes = 0;
};

FsOptions quiet_options() {
  FsOptions o;
  o.commit_interval = std::chrono::hours(1);  // commits only when the workload syncs
  o.checkpoint_interval = std::chrono::seconds(100000);
  o.atime = AtimeMode::kNoatime;  // the walks must not write
  return o;
}

std::string parent_of(const std::string& p) {
  auto s = p.rfind('/');
  return s == std::string::npos ? "" : p.substr(0, s);
}
std::string base_of(const std::string& p) {
  auto s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

class Workload {
 public:
  // `kernel_times`: as under FUSE's writeback cache, the kernel keeps the
  // times of written files (an overwrite in place then commits nothing).
  Workload(std::uint64_t seed, std::size_t ops, bool kernel_times)
      : rng_(seed), nops_(ops), kernel_times_(kernel_times) {}

  // Runs the workload on a fresh image; everything it needs for the crash
  // images goes into `rec`. Returns "" or what went wrong.
  std::string run(Recorded& rec);

 private:
  std::uint64_t pick(std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng_); }
  Ino ino_of(const std::string& path);
  std::vector<std::string> files_in(const Tree& t) const;
  std::string random_name();
  std::string content(std::uint64_t len) { return pattern(len, rng_()); }
  // One random operation on the live filesystem; returns its description,
  // or "" when it did nothing. Sets `err` on an unexpected failure.
  std::string step(const Tree& cur, std::string& err);

  std::mt19937_64 rng_;
  std::size_t nops_;
  bool kernel_times_;
  FileSystem* fs_ = nullptr;
  RecordingDevice* rec_dev_ = nullptr;
  Recorded* rec_ = nullptr;
};

Ino Workload::ino_of(const std::string& path) {
  Ino cur = kRootIno;
  std::string_view rest = path;
  while (!rest.empty()) {
    auto s = rest.find('/');
    Attr a;
    if (fs_->lookup(cur, rest.substr(0, s), &a) != 0) return 0;
    fs_->forget(a.ino, 1);
    cur = a.ino;
    rest = s == std::string_view::npos ? std::string_view{} : rest.substr(s + 1);
  }
  return cur;
}

std::vector<std::string> Workload::files_in(const Tree& t) const {
  std::vector<std::string> out;
  for (const auto& [p, n] : t)
    if (n->type == S_IFREG) out.push_back(p);
  return out;
}

std::string Workload::random_name() {
  static const char* const kDirs[] = {"", "d/", "d/e/"};
  return std::string(kDirs[pick(3)]) + "f" + std::to_string(pick(6));
}

std::string Workload::step(const Tree& cur, std::string& err) {
  auto fail = [&](const std::string& what, long rc) {
    err = what + " failed: " + std::to_string(rc);
    return std::string();
  };
  const auto files = files_in(cur);
  auto any_file = [&]() -> std::string { return files.empty() ? "" : files[pick(files.size())]; };
  // Sizes that are often whole blocks (clones share those).
  auto size = [&]() -> std::uint64_t {
    switch (pick(4)) {
      case 0: return pick(300);
      case 1: return pick(20000);
      default: return kBlockSize * (1 + pick(24));
    }
  };
  const std::uint64_t kind = pick(100);
  if (kind < 14) {  // create
    std::string p = random_name();
    if (cur.count(p)) return "";
    Ino dir = ino_of(parent_of(p));
    if (!dir) return "";
    Attr a;
    if (int rc = fs_->create(dir, base_of(p), 0644, O_CREAT | O_RDWR, kRoot, &a); rc) return fail("create " + p, rc);
    // A third of the new files copy an existing file's bytes: dedup
    // (at the first write of a small file, at release of a larger one)
    // makes them share its extents.
    const std::string copy_of = pick(3) == 0 ? any_file() : "";
    const std::string c = copy_of.empty() ? content(size()) : cur.at(copy_of)->data;
    if (!c.empty()) {
      ssize_t n = fs_->write(a.ino, 0, as_bytes(c));
      if (n != static_cast<ssize_t>(c.size())) return fail("write " + p, n);
    }
    fs_->release(a.ino);
    fs_->forget(a.ino, 1);
    return "create " + p + " " + std::to_string(c.size()) + (copy_of.empty() ? "" : " (copy of " + copy_of + ")");
  }
  if (kind < 30) {  // overwrite (in place, or redirected if shared)
    std::string p = any_file();
    if (p.empty()) return "";
    Ino ino = ino_of(p);
    const std::uint64_t sz = cur.at(p)->size;
    std::uint64_t off, len;
    if (pick(2)) {
      off = kBlockSize * pick(sz / kBlockSize + 1);
      len = kBlockSize * (1 + pick(4));
    } else {
      off = pick(sz + 1);
      len = 1 + pick(9000);
    }
    fs_->open(ino, O_RDWR);
    ssize_t n = fs_->write(ino, off, as_bytes(content(len)));
    fs_->release(ino);
    if (n != static_cast<ssize_t>(len)) return fail("overwrite " + p, n);
    return "overwrite " + p + " @" + std::to_string(off) + "+" + std::to_string(len);
  }
  if (kind < 38) {  // append
    std::string p = any_file();
    if (p.empty()) return "";
    Ino ino = ino_of(p);
    const std::uint64_t off = cur.at(p)->size;
    const std::uint64_t len = 1 + pick(12000);
    fs_->open(ino, O_RDWR);
    ssize_t n = fs_->write(ino, off, as_bytes(content(len)));
    fs_->release(ino);
    if (n != static_cast<ssize_t>(len)) return fail("append " + p, n);
    return "append " + p + " +" + std::to_string(len);
  }
  if (kind < 44) {  // truncate, punch a hole, preallocate
    std::string p = any_file();
    if (p.empty()) return "";
    if (const std::uint64_t how = pick(4); how < 2) {
      const std::uint64_t sz = cur.at(p)->size;
      const std::uint64_t off = kBlockSize * pick(sz / kBlockSize + 1), len = kBlockSize * (1 + pick(6));
      const int mode = how == 0 ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : 0;
      if (int rc = fs_->fallocate(ino_of(p), mode, off, len); rc) return fail("fallocate " + p, rc);
      return std::string(how == 0 ? "punch " : "preallocate ") + p + " @" + std::to_string(off) + "+" +
             std::to_string(len);
    }
    SetAttr sa;
    sa.valid = SetAttr::kSize;
    sa.size = pick(2) ? pick(cur.at(p)->size + 1) : cur.at(p)->size + pick(10000);
    Attr a;
    if (int rc = fs_->setattr(ino_of(p), sa, &a); rc) return fail("truncate " + p, rc);
    return "truncate " + p + " " + std::to_string(sa.size);
  }
  if (kind < 52) {  // xattrs
    std::string p = pick(5) ? any_file() : (pick(2) ? "d" : "");
    if (!cur.count(p)) return "";
    const Ino ino = ino_of(p);
    const std::string name = "user.x" + std::to_string(pick(3));
    if (pick(3) == 0) {
      int rc = fs_->removexattr(ino, name);
      if (rc != 0 && rc != -ENODATA) return fail("removexattr " + p, rc);
      return "removexattr " + p + " " + name;
    }
    if (int rc = fs_->setxattr(ino, name, content(1 + pick(2000)), 0); rc) return fail("setxattr " + p, rc);
    return "setxattr " + p + " " + name;
  }
  if (kind < 57) {  // hard link
    std::string p = any_file(), q = random_name();
    if (p.empty() || cur.count(q)) return "";
    Ino dir = ino_of(parent_of(q));
    if (!dir) return "";
    Attr a;
    if (int rc = fs_->link(ino_of(p), dir, base_of(q), &a); rc) return fail("link " + p + " " + q, rc);
    fs_->forget(a.ino, 1);
    return "link " + p + " " + q;
  }
  if (kind < 63) {  // unlink
    std::string p = any_file();
    if (p.empty()) return "";
    if (int rc = fs_->unlink(ino_of(parent_of(p)), base_of(p)); rc) return fail("unlink " + p, rc);
    return "unlink " + p;
  }
  if (kind < 70) {  // rename (maybe over an existing file)
    std::string p = any_file(), q = random_name();
    if (p.empty() || p == q) return "";
    Ino dir = ino_of(parent_of(q));
    if (!dir) return "";
    if (auto it = cur.find(q); it != cur.end() && it->second->type != S_IFREG) return "";
    if (int rc = fs_->rename(ino_of(parent_of(p)), base_of(p), dir, base_of(q), 0, kRoot); rc)
      return fail("rename " + p + " " + q, rc);
    return "rename " + p + " " + q;
  }
  if (kind < 80) {  // clone whole blocks (shares extents)
    std::string p = any_file(), q = random_name();
    if (p.empty() || p == q) return "";
    const std::uint64_t sz = cur.at(p)->size;
    if (sz < kBlockSize) return "";
    Ino dst;
    if (auto it = cur.find(q); it == cur.end()) {
      Ino dir = ino_of(parent_of(q));
      if (!dir) return "";
      Attr a;
      if (int rc = fs_->create(dir, base_of(q), 0644, O_CREAT | O_RDWR, kRoot, &a); rc) return fail("create " + q, rc);
      fs_->release(a.ino);
      fs_->forget(a.ino, 1);
      dst = a.ino;
    } else if (it->second->type == S_IFREG) {
      dst = ino_of(q);
    } else {
      return "";
    }
    const Ino src = ino_of(p);
    if (src == dst) return "";
    const std::uint64_t blocks = sz / kBlockSize;
    const std::uint64_t from = pick(blocks);
    const std::uint64_t n = 1 + pick(blocks - from);
    const std::uint64_t to = pick(2) ? from : pick(8);
    ssize_t got = fs_->copy_file_range(src, from * kBlockSize, dst, to * kBlockSize, n * kBlockSize);
    if (got != static_cast<ssize_t>(n * kBlockSize)) return fail("clone " + p + " " + q, got);
    return "clone " + p + " " + q + " blocks " + std::to_string(from) + "+" + std::to_string(n) + " to " +
           std::to_string(to);
  }
  if (kind < 84) {  // mkdir / rmdir of the subdirectories, symlinks
    if (pick(3) == 0) {
      const std::string p = std::string(pick(2) ? "d/" : "") + "l" + std::to_string(pick(3));
      if (cur.count(p)) {
        if (int rc = fs_->unlink(ino_of(parent_of(p)), base_of(p)); rc) return fail("unlink " + p, rc);
        return "unlink " + p;
      }
      const Ino dir = ino_of(parent_of(p));
      if (!dir) return "";
      Attr a;
      const std::string target = "target-" + std::to_string(pick(1000)) + std::string(pick(300), 'x');
      if (int rc = fs_->symlink(dir, base_of(p), target, kRoot, &a); rc) return fail("symlink " + p, rc);
      fs_->forget(a.ino, 1);
      return "symlink " + p;
    }
    if (!cur.count("d")) {
      Attr a;
      if (int rc = fs_->mkdir(kRootIno, "d", 0755, kRoot, &a); rc) return fail("mkdir d", rc);
      fs_->forget(a.ino, 1);
      return "mkdir d";
    }
    if (!cur.count("d/e")) {
      Attr a;
      if (int rc = fs_->mkdir(ino_of("d"), "e", 0755, kRoot, &a); rc) return fail("mkdir d/e", rc);
      fs_->forget(a.ino, 1);
      return "mkdir d/e";
    }
    int rc = fs_->rmdir(ino_of("d"), "e");
    if (rc != 0 && rc != -ENOTEMPTY) return fail("rmdir d/e", rc);
    return rc == 0 ? "rmdir d/e" : "";
  }
  if (kind < 91) {  // fsync a file and its directory
    std::string p = any_file();
    if (p.empty()) return "";
    if (int rc = fs_->fsync(ino_of(p), false); rc) return fail("fsync " + p, rc);
    if (int rc = fs_->fsync(ino_of(parent_of(p)), false); rc) return fail("fsync dir of " + p, rc);
    rec_->durable.push_back({rec_dev_->position(), rec_->states.size() - 1, p});
    return "fsync " + p;
  }
  if (kind < 97) {
    if (int rc = fs_->syncfs(); rc) return fail("syncfs", rc);
    rec_->durable.push_back({rec_dev_->position(), rec_->states.size() - 1, std::nullopt});
    return "syncfs";
  }
  if (int rc = fs_->checkpoint(); rc) return fail("checkpoint", rc);
  return "checkpoint";
}

std::string Workload::run(Recorded& rec) {
  rec_ = &rec;
  auto medium = test::format_medium(64ULL << 20);
  rec.base = medium->bytes();
  auto dev = std::make_unique<RecordingDevice>(medium);
  rec_dev_ = dev.get();
  std::string error;
  auto fs = FileSystem::open(std::move(dev), quiet_options(), error);
  if (!fs) return "open: " + error;
  fs->set_kernel_write_times(kernel_times_);
  fs_ = fs.get();
  rec.states.emplace_back();
  if (auto e = walk(*fs, rec.states.back()); !e.empty()) return e;
  rec.ops.push_back("mount");
  rec.begins.push_back(0);
  while (rec.ops.size() <= nops_) {
    const std::size_t begin = rec_dev_->position();
    const std::size_t durable_before = rec.durable.size();
    std::string err;
    std::string what = step(rec.states.back(), err);
    if (!err.empty()) return "operation " + std::to_string(rec.ops.size()) + ": " + err;
    if (what.empty()) continue;
    Tree t;
    if (auto e = walk(*fs, t, &rec.states.back()); !e.empty()) return e;
    rec.states.push_back(std::move(t));
    rec.begins.push_back(begin);
    rec.ops.push_back(std::move(what));
    // An fsync or syncfs acknowledged just now made the state before it
    // durable, which is also the state after it.
    if (rec.durable.size() > durable_before) rec.durable.back().state = rec.states.size() - 1;
  }
  // A clean unmount persists everything.
  const std::size_t begin = rec_dev_->position();
  if (int rc = fs->shutdown(); rc) return "shutdown: " + std::to_string(rc);
  rec.log = rec_dev_->log();
  fs_ = nullptr;
  rec_dev_ = nullptr;
  fs.reset();
  rec.states.push_back(rec.states.back());
  rec.begins.push_back(begin);
  rec.ops.push_back("shutdown");
  rec.durable.push_back({rec.log.size(), rec.states.size() - 1, std::nullopt});
  for (const auto& e : rec.log) rec.flushes += e.flush;
  return "";
}

// ---------------------------------------------------------- crash states

// The crash image at `cut` must show a state the workload could have left.
std::string check_tree(const Tree& got, const Recorded& rec, std::size_t cut) {
  // The last operation that may have reached the device before the cut.
  std::size_t last = 0;
  for (std::size_t k = 1; k < rec.states.size(); ++k)
    if (rec.begins[k] < cut) last = k;
  std::size_t floor_all = 0;
  std::map<std::string, std::size_t> floor_path;
  for (const Durable& d : rec.durable) {
    if (d.pos > cut) continue;
    if (!d.path) floor_all = std::max(floor_all, d.state);
    else floor_path[*d.path] = std::max(floor_path[*d.path], d.state);
  }
  auto floor_of = [&](const std::string& p) {
    auto it = floor_path.find(p);
    return std::max(floor_all, it == floor_path.end() ? std::size_t{0} : it->second);
  };
  if (last < floor_all) last = floor_all;
  std::set<std::string> paths;
  for (const auto& [p, n] : got) paths.insert(p);
  for (std::size_t s = floor_all; s <= last; ++s)
    for (const auto& [p, n] : rec.states[s]) paths.insert(p);
  std::ostringstream why;
  for (const std::string& p : paths) {
    const std::size_t from = std::min(floor_of(p), last);
    std::vector<const Node*> cands;  // nullptr: absent
    for (std::size_t s = from; s <= last; ++s) {
      auto it = rec.states[s].find(p);
      cands.push_back(it == rec.states[s].end() ? nullptr : it->second.get());
    }
    auto it = got.find(p);
    const Node* g = it == got.end() ? nullptr : it->second.get();
    const std::string where = "/" + p + " (candidate states " + std::to_string(from) + ".." + std::to_string(last) + ")";
    if (!g) {
      if (std::find(cands.begin(), cands.end(), nullptr) == cands.end()) why << where << ": missing\n";
      continue;
    }
    std::vector<const Node*> same_type;
    for (const Node* c : cands)
      if (c && c->type == g->type) same_type.push_back(c);
    if (same_type.empty()) {
      why << where << ": present (type " << std::oct << g->type << std::dec << ") but never was\n";
      continue;
    }
    auto any = [&](auto pred) { return std::any_of(same_type.begin(), same_type.end(), pred); };
    if (!any([&](const Node* c) { return c->size == g->size; })) why << where << ": size " << g->size << "\n";
    if (!any([&](const Node* c) { return c->nlink == g->nlink; })) why << where << ": nlink " << g->nlink << "\n";
    if (!any([&](const Node* c) { return c->xattrs == g->xattrs; })) why << where << ": xattrs differ\n";
    if (!any([&](const Node* c) { return c->target == g->target; })) why << where << ": symlink target\n";
    // Data written in place may reach the device before the metadata of
    // the operations around it: blocks may also come from the same file
    // under another name (hard links, renames).
    for (std::size_t s = from; s <= last; ++s)
      for (const auto& [q, n] : rec.states[s])
        if (q != p && n->ino == g->ino && n->generation == g->generation) same_type.push_back(n.get());
    for (std::uint64_t b = 0; b * kBlockSize < g->data.size(); ++b) {
      const std::uint64_t off = b * kBlockSize;
      const std::uint64_t len = std::min<std::uint64_t>(kBlockSize, g->data.size() - off);
      const std::string_view mine(g->data.data() + off, len);
      bool ok = any([&](const Node* c) {
        for (std::uint64_t i = 0; i < len; ++i) {
          const char want = off + i < c->data.size() ? c->data[off + i] : '\0';
          if (mine[i] != want) return false;
        }
        return true;
      });
      if (!ok) {
        why << where << ": block " << b << " matches no candidate\n";
        break;
      }
    }
  }
  return why.str();
}

struct Counts {
  std::uint64_t states = 0;
  std::uint64_t reused = 0;     // recovered filesystems written to again
  std::uint64_t dropped = 0;    // unflushed blocks left out
  std::uint64_t reordered = 0;  // images whose unflushed blocks landed shuffled
};

FsOptions recovery_options() {
  FsOptions o = quiet_options();
  o.defer_start = true;
  return o;
}

std::string fsck_problems(Device& dev) {
  Checker checker(dev, FsckOptions{});
  FsckReport r = checker.run();
  if (r.exit_code == kFsckClean) return "";
  std::string s = "fsck exit " + std::to_string(r.exit_code) + ": " + r.reason;
  for (const auto& p : r.problems) s += "\n  " + p;
  return s;
}

// Checks one crash image; "" or what is wrong.
std::string check_image(const std::shared_ptr<OverlayDevice>& img, const Recorded& rec, std::size_t cut,
                        bool reuse) {
  std::string error;
  if (auto e = fsck_problems(*img); !e.empty()) {
    auto fs = FileSystem::open(std::make_unique<test::DeviceRef>(img), recovery_options(), error);
    return e + "\nmount: " + (fs ? "succeeds" : error) + "\n";
  }
  auto fs = FileSystem::open(std::make_unique<test::DeviceRef>(img), recovery_options(), error);
  if (!fs) return "mount refused: " + error;
  Tree got;
  if (auto e = walk(*fs, got); !e.empty()) return "walk: " + e;
  if (auto e = check_tree(got, rec, cut); !e.empty()) return e;
  if (!reuse) return "";
  // The recovered filesystem keeps working and stays consistent.
  fs->start();
  Attr a;
  const std::string probe = pattern(9000, cut);
  if (int rc = fs->create(kRootIno, "after-crash", 0644, O_CREAT | O_RDWR, kRoot, &a); rc)
    return "create after crash: " + std::to_string(rc);
  if (fs->write(a.ino, 0, as_bytes(probe)) != static_cast<ssize_t>(probe.size())) return "write after crash";
  fs->release(a.ino);
  fs->forget(a.ino, 1);
  if (int rc = fs->syncfs(); rc) return "syncfs after crash: " + std::to_string(rc);
  if (int rc = fs->shutdown(); rc) return "shutdown after crash: " + std::to_string(rc);
  fs.reset();
  if (auto e = fsck_problems(*img); !e.empty()) return "after reuse: " + e;
  fs = FileSystem::open(std::make_unique<test::DeviceRef>(img), recovery_options(), error);
  if (!fs) return "remount after reuse refused: " + error;
  Tree again;
  if (auto e = walk(*fs, again); !e.empty()) return "walk after reuse: " + e;
  auto it = again.find("after-crash");
  if (it == again.end() || it->second->data != probe) return "file written after the crash is lost";
  again.erase("after-crash");
  got.erase("after-crash");
  for (auto& [p, n] : got) {
    auto j = again.find(p);
    if (j == again.end() || !(*j->second == *n)) return "reuse changed /" + p;
  }
  if (again.size() != got.size()) return "reuse added paths";
  return "";
}

// Runs `count` crash states of one recorded workload.
// Cuts lie at or after `min_cut`.
std::string crash_states(const Recorded& rec, std::size_t count, std::uint64_t seed, Counts& counts,
                         std::size_t min_cut = 0) {
  std::mt19937_64 rng(seed);
  const std::size_t n = rec.log.size();
  // Cut points: before and after every flush, then random ones.
  std::vector<std::size_t> cuts;
  for (std::size_t i = min_cut; i < n; ++i)
    if (rec.log[i].flush) {
      cuts.push_back(i);
      cuts.push_back(i + 1);
    }
  std::shuffle(cuts.begin(), cuts.end(), rng);
  if (cuts.size() > count) cuts.resize(count);
  while (cuts.size() < count) cuts.push_back(std::uniform_int_distribution<std::size_t>(min_cut, n)(rng));
  std::sort(cuts.begin(), cuts.end());

  // The image as of the last flush before the cut, advanced as cuts grow.
  auto durable = std::make_shared<std::vector<std::byte>>(rec.base);
  std::size_t applied = 0;  // log entries in `durable`
  auto apply = [&](const test::LoggedIo& e) {
    if (!e.flush) std::memcpy(durable->data() + e.offset, e.data.data(), e.data.size());
  };
  for (std::size_t si = 0; si < cuts.size(); ++si) {
    const std::size_t cut = cuts[si];
    std::size_t last_flush = 0;  // entries before it are durable
    for (std::size_t i = cut; i > 0; --i)
      if (rec.log[i - 1].flush) {
        last_flush = i;
        break;
      }
    for (; applied < last_flush; ++applied) apply(rec.log[applied]);
    // Unflushed blocks: (log entry, block) in log order.
    std::vector<std::pair<std::size_t, std::uint64_t>> pending;
    for (std::size_t i = last_flush; i < cut; ++i)
      for (std::uint64_t b = 0; b * kBlockSize < rec.log[i].data.size(); ++b) pending.emplace_back(i, b);
    const std::uint64_t state_seed = rng();
    std::mt19937_64 srng(state_seed);
    // 0: all in order; 1: none; 2: each block or not, shuffled; 3: each
    // write whole or not, one of the kept ones torn (a random part of its
    // blocks lost), shuffled; 4: every write, but one of them torn.
    const int mode = static_cast<int>(srng() % 5);
    std::vector<std::pair<std::size_t, std::uint64_t>> chosen;
    if (mode == 0) chosen = pending;
    if (mode == 2) {
      for (auto& p : pending)
        if (srng() % 2) chosen.push_back(p);
    }
    if (mode >= 3) {
      std::map<std::size_t, bool> keep;
      for (std::size_t i = last_flush; i < cut; ++i) keep[i] = mode == 4 || srng() % 2;
      const std::size_t torn = last_flush + (cut > last_flush ? srng() % (cut - last_flush) : 0);
      const std::uint64_t torn_blocks = rec.log[torn].data.size() / kBlockSize;
      const std::uint64_t tear_from = torn_blocks ? srng() % torn_blocks : 0;
      const std::uint64_t tear_len = torn_blocks ? 1 + srng() % torn_blocks : 0;
      for (auto& p : pending)
        if (keep[p.first] && !(p.first == torn && p.second >= tear_from && p.second < tear_from + tear_len))
          chosen.push_back(p);
    }
    if (mode >= 2) {
      std::shuffle(chosen.begin(), chosen.end(), srng);
      if (chosen.size() > 1) ++counts.reordered;
    }
    counts.dropped += pending.size() - chosen.size();
    auto img = std::make_shared<OverlayDevice>(std::shared_ptr<const std::vector<std::byte>>(durable));
    for (auto [i, b] : chosen)
      img->put_block(rec.log[i].offset / kBlockSize + b, rec.log[i].data.data() + b * kBlockSize);
    const bool reuse = si % 8 == 0;
    std::string e = check_image(img, rec, cut, reuse);
    ++counts.states;
    counts.reused += reuse;
    if (!e.empty()) {
      std::ostringstream os;
      os << "crash state " << si << " (cut " << cut << " of " << n << ", last flush " << last_flush
         << ", unflushed blocks " << pending.size() << ", applied " << chosen.size() << ", mode " << mode
         << ", state seed " << state_seed << "):\n"
         << e << "operations near the cut:";
      for (std::size_t k = 1; k < rec.ops.size(); ++k)
        if (rec.begins[k] < cut + 8) os << "\n  " << k << ": " << rec.ops[k] << " (log " << rec.begins[k] << ")";
      os << "\ndurability points:";
      for (const Durable& d : rec.durable)
        if (d.pos < cut + 8) os << " [log " << d.pos << ": state " << d.state << " " << d.path.value_or("all") << "]";
      return os.str();
    }
  }
  return "";
}

TEST_CASE("powercut: every crash image mounts, is clean and keeps what was durable", "[powercut][crash]") {
  const std::uint64_t total = env_u64("DHFS_POWERCUT_STATES", kSanitized ? 1000 : 3000);
  const std::uint64_t seed = env_u64("DHFS_POWERCUT_SEED", std::random_device{}());
  constexpr std::size_t kStatesPerWorkload = 150;
  const std::size_t workloads = std::max<std::size_t>(1, (total + kStatesPerWorkload - 1) / kStatesPerWorkload);
  Counts counts;
  std::uint64_t flush_points = 0, log_entries = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t w = 0; w < workloads; ++w) {
    const std::uint64_t wseed = seed * 1000003 + w;
    INFO("DHFS_POWERCUT_SEED=" << seed << " workload " << w);
    Recorded rec;
    Workload wl(wseed, 60, w % 2 == 1);  // every other one as under FUSE
    const std::string werr = wl.run(rec);
    INFO("workload: " << werr);
    REQUIRE(werr.empty());
    log_entries += rec.log.size();
    flush_points += rec.flushes;
    const std::size_t want = std::min<std::uint64_t>(kStatesPerWorkload, total - w * kStatesPerWorkload);
    const std::string e = crash_states(rec, want, wseed, counts);
    if (!e.empty()) FAIL_CHECK(e);
    if (!e.empty()) break;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "powercut: seed " << seed << ", " << workloads << " workloads, " << log_entries << " logged I/Os, "
            << flush_points << " flushes; " << counts.states << " crash states checked (" << counts.reused
            << " reused after recovery, " << counts.reordered << " with reordered blocks, " << counts.dropped
            << " unflushed blocks dropped) in " << secs << " s\n";
  CHECK(counts.states >= total);
}

// A commit larger than the journal's largest batch is written as several
// batches. A crash may keep a later batch of it and lose part of an earlier
// one; mount must not take that for damage in the middle of the log.
TEST_CASE("powercut: a commit written as several batches", "[powercut][crash]") {
  const std::uint64_t seed = env_u64("DHFS_POWERCUT_SEED", std::random_device{}());
  INFO("DHFS_POWERCUT_SEED=" << seed);
  Recorded rec;
  auto medium = test::format_medium(64ULL << 20);
  rec.base = medium->bytes();
  auto owned = std::make_unique<RecordingDevice>(medium);
  RecordingDevice* dev = owned.get();
  std::string error;
  auto fs = FileSystem::open(std::move(owned), quiet_options(), error);
  REQUIRE(fs);
  auto record = [&](std::string what, std::size_t begin) {
    Tree t;
    REQUIRE(walk(*fs, t, rec.states.empty() ? nullptr : &rec.states.back()) == "");
    rec.states.push_back(std::move(t));
    rec.begins.push_back(begin);
    rec.ops.push_back(std::move(what));
  };
  record("mount", 0);
  constexpr int kFiles = 80;  // 80 x 64 KiB of xattrs: more than a quarter of the 16 MiB ring
  std::vector<Ino> inos;
  for (int i = 0; i < kFiles; ++i) {
    inos.push_back(test::write_file(*fs, kRootIno, "x" + std::to_string(i), pattern(100, i)));
  }
  record("create x*", 0);
  REQUIRE(fs->syncfs() == 0);
  rec.durable.push_back({dev->position(), rec.states.size() - 1, std::nullopt});
  // Hold the committer in the flush before its next batch, so that
  // everything appended meanwhile goes into one commit.
  std::mutex gate_mu;
  std::condition_variable gate_cv;
  bool open = false, held = false;
  dev->set_flush_gate([&] {
    std::unique_lock lk(gate_mu);
    held = true;
    gate_cv.notify_all();
    gate_cv.wait(lk, [&] { return open; });
  });
  std::size_t begin = dev->position();
  REQUIRE(fs->setxattr(inos[0], "user.first", "1", 0) == 0);
  record("setxattr x0 user.first", begin);
  std::thread syncer([&] { fs->syncfs(); });
  {
    std::unique_lock lk(gate_mu);
    gate_cv.wait(lk, [&] { return held; });
  }
  for (int i = 0; i < kFiles; ++i) {
    begin = dev->position();
    REQUIRE(fs->setxattr(inos[i], "user.big", pattern(kXattrValueMax, 1000 + i), 0) == 0);
    record("setxattr x" + std::to_string(i) + " user.big", begin);
  }
  const std::size_t released_at = dev->position();
  {
    std::lock_guard lk(gate_mu);
    open = true;
  }
  gate_cv.notify_all();
  syncer.join();
  dev->set_flush_gate(nullptr);
  REQUIRE(fs->syncfs() == 0);
  rec.durable.push_back({dev->position(), rec.states.size() - 1, std::nullopt});
  begin = dev->position();
  const Superblock sb = fs->superblock();
  REQUIRE(fs->shutdown() == 0);
  rec.log = dev->log();
  fs.reset();
  rec.states.push_back(rec.states.back());
  rec.begins.push_back(begin);
  rec.ops.push_back("shutdown");
  rec.durable.push_back({rec.log.size(), rec.states.size() - 1, std::nullopt});
  // The big commit went out as several large batches.
  std::size_t big_batches = 0;
  for (const auto& e : rec.log)
    if (!e.flush && e.offset >= sb.journal_start * kBlockSize && e.offset < sb.data_start * kBlockSize &&
        e.data.size() >= (512u << 10))
      ++big_batches;
  CHECK(big_batches >= 2);
  Counts counts;
  const std::string e = crash_states(rec, env_u64("DHFS_POWERCUT_MULTI", 300), seed, counts, released_at);
  if (!e.empty()) FAIL_CHECK(e);
  std::cout << "powercut (multi-batch commit): " << rec.log.size() << " logged I/Os; " << counts.states
            << " crash states checked\n";
}

}  // namespace
}  // namespace dhfs

namespace dhfs {
namespace {
std::size_t flushes_since(const RecordingDevice& dev, std::size_t from) {
  const std::vector<test::LoggedIo> log = dev.log();
  return static_cast<std::size_t>(
      std::count_if(log.begin() + static_cast<std::ptrdiff_t>(from), log.end(), [](const test::LoggedIo& e) { return e.flush; }));
}
// A 64 KiB file "db", written and synced, on a filesystem whose device
// logs every I/O; write() overwrites one 4 KiB page of it.
struct RecordedDb {
  explicit RecordedDb(bool kernel_times) {
    auto owned = std::make_unique<RecordingDevice>(medium);
    dev = owned.get();
    FsOptions o = quiet_options();
    o.dedup = false;  // no content hash to withdraw (that is a commit of its own)
    std::string error;
    fs = FileSystem::open(std::move(owned), o, error);
    REQUIRE(fs);
    fs->set_kernel_write_times(kernel_times);
    ino = test::write_file(*fs, kRootIno, "db", first);
    REQUIRE(fs->syncfs() == 0);
  }
  // Returns whether the write mapped new blocks.
  bool write(std::uint64_t off) {
    bool blocks_changed = true;
    REQUIRE(fs->write(ino, off, {reinterpret_cast<const std::byte*>(page.data()), page.size()}, &blocks_changed) ==
            static_cast<ssize_t>(page.size()));
    return blocks_changed;
  }

  std::shared_ptr<MemDevice> medium = test::format_medium(64ULL << 20);
  RecordingDevice* dev = nullptr;
  std::unique_ptr<FileSystem> fs;
  const std::string first = pattern(64 << 10, 1);
  const std::string page = pattern(4096, 2);
  Ino ino = 0;
};
}  // namespace

// data=ordered where it matters, and no more: a transaction that maps,
// converts or frees blocks or grows a file waits for a flush of the data
// written before it; an overwrite in place (new times only) does not, so
// its fsync costs one device flush. (The crash test above checks that
// every crash image still holds what fsync made durable.)
TEST_CASE("powercut: fsync after an overwrite in place flushes once, after an append twice", "[powercut]") {
  RecordedDb db(false);

  std::size_t at = db.dev->position();
  db.write(8192);
  REQUIRE(db.fs->fsync(db.ino, false) == 0);
  CHECK(flushes_since(*db.dev, at) == 1);

  at = db.dev->position();
  db.write(db.first.size());  // appends: the size grows, a block is mapped
  REQUIRE(db.fs->fsync(db.ino, false) == 0);
  CHECK(flushes_since(*db.dev, at) == 2);

  std::string want = db.first;
  want.replace(8192, db.page.size(), db.page);
  want += db.page;
  CHECK(test::read_file(*db.fs, db.ino) == want);
}

// Under the kernel's writeback cache (FUSE), the kernel keeps the times of
// written files: an overwrite in place then changes no metadata, commits
// nothing, and its fsync is the device flush alone, with no journal write.
// Writes that map blocks or grow the file still commit, and what an fsync
// made durable survives a crash right after it.
TEST_CASE("powercut: with kernel-kept times an overwrite in place commits nothing", "[powercut]") {
  RecordedDb db(true);
  const Attr before = test::getattr_of(*db.fs, db.ino);
  auto writes_since = [&](std::size_t from) {
    const std::vector<test::LoggedIo> log = db.dev->log();
    return std::count_if(log.begin() + static_cast<std::ptrdiff_t>(from), log.end(),
                         [](const test::LoggedIo& e) { return !e.flush; });
  };

  std::size_t at = db.dev->position();
  CHECK_FALSE(db.write(8192));
  REQUIRE(db.fs->fsync(db.ino, false) == 0);
  CHECK(flushes_since(*db.dev, at) == 1);
  CHECK(writes_since(at) == 1);  // the page itself, no journal batch
  const Attr after = test::getattr_of(*db.fs, db.ino);
  CHECK(after.size == before.size);
  CHECK(after.mtime_ns == before.mtime_ns);  // the kernel's setattr sets them

  at = db.dev->position();
  CHECK(db.write(db.first.size()));  // appends: maps a block and grows the file
  REQUIRE(db.fs->fsync(db.ino, false) == 0);
  CHECK(flushes_since(*db.dev, at) == 2);
  CHECK(writes_since(at) == 2);  // the page, then the journal batch

  std::string want = db.first;
  want.replace(8192, db.page.size(), db.page);
  want += db.page;
  CHECK(test::read_file(*db.fs, db.ino) == want);
  // A crash now, with no unmount: a copy of the medium as it is mounts
  // with both writes.
  auto crashed = std::make_shared<MemDevice>(db.medium->size_bytes());
  crashed->bytes() = db.medium->bytes();
  std::string error;
  auto again = FileSystem::open(std::make_unique<RecordingDevice>(crashed), quiet_options(), error);
  REQUIRE(again);
  Attr found;
  REQUIRE(again->lookup(kRootIno, "db", &found) == 0);
  CHECK(test::read_file(*again, found.ino) == want);
}

}  // namespace dhfs
