// fsx-style differential test: a long random sequence of file operations
// run in lockstep on the dhfs mount and on a reference filesystem (a tmpfs
// the test mounts in its scratch directory, detached on exit also when the
// test fails), comparing results, contents and metadata after every step.
//
// Operations: write, read, truncate, punch hole, fallocate (plain and
// KEEP_SIZE), copy_file_range (dhfs clones: shared extents, then
// redirect-on-write), mmap read, mmap write (+msync), rename, link, unlink,
// chmod, fsync/fdatasync, and a remount of dhfs every few thousand steps
// (which also runs fsck.dhfs -n). Files live in the root and one
// subdirectory, are at most 1 MiB, and come and go.
//
// After every step: the result (or errno) of the call on both sides; for
// every name: existence, type, size, nlink and permission bits; and the
// full contents of every file the step touched (all files after a remount
// and at the end). Not compared: timestamps, inode numbers and st_blocks
// (tmpfs and dhfs allocate differently: dhfs shares clone extents and
// keeps preallocated blocks; st_blocks of dhfs is checked elsewhere).
//
// Environment:
//   DHFS_FSX_SEED=N   seed (default: from the clock); printed at the start and
//                     on failure, it reproduces the whole run
//   DHFS_FSX_OPS=N    number of operations (default 20000, the CI run);
//                     long mode e.g. DHFS_FSX_OPS=1000000
//   DHFS_FSX_LOG=PATH also write the whole operation log there
// On a mismatch the test fails with the seed, the step and the last 200
// operations of the log.
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/mount.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <random>
#include <sstream>

#include "fixture.h"

using namespace dhfs_test;

namespace {

constexpr std::uint64_t kMaxFile = 1 << 20;
const char* const kNames[] = {"f0", "f1", "f2", "f3", "d/f0", "d/f1", "d/f2", "d/g"};

std::uint64_t env_u64(const char* name, std::uint64_t dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : dflt;
}

// The outcome of a call on one side: the value or -errno.
long outcome(long r) { return r < 0 ? -errno : r; }

std::string describe(long r) { return r < 0 ? errname(int(-r)) : std::to_string(r); }

std::string read_all(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return "<open: " + errname(errno) + ">";
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      out = "<read: " + errname(errno) + ">";
      break;
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

class Fsx {
 public:
  Fsx(MountedFs& fs, std::string ref, std::uint64_t seed) : fs_(fs), ref_(std::move(ref)), seed_(seed), rng_(seed) {
    if (const char* p = std::getenv("DHFS_FSX_LOG")) log_file_.open(p, std::ios::trunc);
  }

  // Runs `ops` steps; returns "" or the description of the first mismatch.
  std::string run(std::uint64_t ops) {
    for (const char* root : {fs_.root().c_str(), ref_.c_str()})
      if (::mkdir((std::string(root) + "/d").c_str(), 0755) != 0) return "mkdir d failed: " + errname(errno);
    for (step_ = 1; step_ <= ops; ++step_) {
      touched_.clear();
      std::string err = one_step();
      if (err.empty()) err = compare_metadata();
      if (err.empty())
        for (const auto& n : touched_)
          if (err.empty()) err = compare_contents(n);
      if (!err.empty()) return failure(err);
      if (step_ % 5000 == 0 && !fs_.reference()) {
        log("remount");
        fs_.remount();
        for (const char* n : kNames)
          if (std::string e = compare_contents(n); !e.empty()) return failure("after remount: " + e);
      }
    }
    for (const char* n : kNames)
      if (std::string e = compare_contents(n); !e.empty()) return failure("at the end: " + e);
    return "";
  }

  std::uint64_t steps_done() const { return step_ - 1; }
  const std::map<std::string, std::uint64_t>& counts() const { return counts_; }

 private:
  std::string a(const std::string& n) const { return fs_.root() + "/" + n; }
  std::string b(const std::string& n) const { return ref_ + "/" + n; }

  std::uint64_t rnd(std::uint64_t n) { return n ? rng_() % n : 0; }
  const char* pick() { return kNames[rnd(std::size(kNames))]; }
  // Offsets and lengths: block-aligned half of the time, anywhere otherwise.
  std::uint64_t offset() {
    std::uint64_t o = rnd(kMaxFile);
    return rnd(2) ? o & ~std::uint64_t{4095} : o;
  }
  std::uint64_t length(std::uint64_t off) {
    std::uint64_t l = rnd(4) == 0 ? rnd(256 << 10) + 1 : rnd(16 << 10) + 1;
    if (rnd(2)) l = (l + 4095) & ~std::uint64_t{4095};
    return std::min(l, kMaxFile - off);
  }

  void log(const std::string& line) {
    std::string s = std::to_string(step_) + ": " + line;
    if (log_file_) log_file_ << s << '\n';
    tail_.push_back(std::move(s));
    if (tail_.size() > 200) tail_.pop_front();
  }

  std::string failure(const std::string& err) {
    std::ostringstream o;
    o << "fsx: seed " << seed_ << " (DHFS_FSX_SEED=" << seed_ << "), step " << step_ << ": " << err
      << "\nlast operations:\n";
    for (const auto& l : tail_) o << "  " << l << '\n';
    return o.str();
  }

  // Both sides must agree on `what`'s outcome.
  std::string same(const std::string& what, long ra, long rb) {
    log(what + " -> " + describe(ra) + (ra == rb ? "" : " (reference: " + describe(rb) + ")"));
    if (ra != rb) return what + ": dhfs " + describe(ra) + ", reference " + describe(rb);
    return "";
  }

  template <typename Fn>
  std::string on_fds(const std::string& n, int flags, const std::string& what, Fn fn) {
    int fa = ::open(a(n).c_str(), flags, 0644);
    long oa = outcome(fa);
    int fb = ::open(b(n).c_str(), flags, 0644);
    long ob = outcome(fb);
    std::string err;
    if ((oa < 0) != (ob < 0) || (oa < 0 && oa != ob)) {
      err = same(what + " (open)", oa < 0 ? oa : 0, ob < 0 ? ob : 0);
    } else if (oa >= 0) {
      log(what);
      err = fn(fa, fb);
    } else {
      log(what + " -> open " + describe(oa));
    }
    if (fa >= 0) ::close(fa);
    if (fb >= 0) ::close(fb);
    touched_.push_back(n);
    return err;
  }

  std::string one_step() {
    const std::uint64_t kind = rnd(100);
    const std::string n = pick();
    if (kind < 22) {  // write
      ++counts_["write"];
      std::uint64_t off = offset(), len = length(off);
      std::string data = random_bytes(len, rng_());
      if (rnd(8) == 0) data.assign(len, '\0');  // written zeros, not holes
      return on_fds(n, O_WRONLY | O_CREAT, "write " + n + " @" + std::to_string(off) + "+" + std::to_string(len),
                    [&](int fa, int fb) {
                      return same("  pwrite", outcome(::pwrite(fa, data.data(), len, off)),
                                  outcome(::pwrite(fb, data.data(), len, off)));
                    });
    }
    if (kind < 34) {  // read
      ++counts_["read"];
      std::uint64_t off = offset(), len = length(off) + rnd(8192);
      return on_fds(n, O_RDONLY, "read " + n + " @" + std::to_string(off) + "+" + std::to_string(len),
                    [&](int fa, int fb) {
                      std::string ba(len, '\0'), bb(len, '\0');
                      long ra = outcome(::pread(fa, ba.data(), len, off)), rb = outcome(::pread(fb, bb.data(), len, off));
                      if (std::string e = same("  pread", ra, rb); !e.empty()) return e;
                      if (ra > 0) {
                        std::string d = bytes_diff(std::string_view(ba).substr(0, ra), std::string_view(bb).substr(0, rb));
                        if (!d.empty()) return "pread data differs: " + d;
                      }
                      return std::string();
                    });
    }
    if (kind < 42) {  // truncate
      ++counts_["truncate"];
      std::uint64_t size = rnd(3) == 0 ? 0 : offset();
      std::string what = "truncate " + n + " " + std::to_string(size);
      touched_.push_back(n);
      return same(what, outcome(::truncate(a(n).c_str(), off_t(size))), outcome(::truncate(b(n).c_str(), off_t(size))));
    }
    if (kind < 50) {  // punch hole
      ++counts_["punch"];
      std::uint64_t off = offset(), len = length(off);
      return on_fds(n, O_WRONLY, "punch " + n + " @" + std::to_string(off) + "+" + std::to_string(len),
                    [&](int fa, int fb) {
                      int mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
                      return same("  fallocate", outcome(::fallocate(fa, mode, off_t(off), off_t(len))),
                                  outcome(::fallocate(fb, mode, off_t(off), off_t(len))));
                    });
    }
    if (kind < 56) {  // fallocate
      ++counts_["fallocate"];
      std::uint64_t off = offset(), len = length(off);
      int mode = rnd(2) ? FALLOC_FL_KEEP_SIZE : 0;
      return on_fds(n, O_WRONLY | O_CREAT,
                    std::string("fallocate") + (mode ? " keep_size " : " ") + n + " @" + std::to_string(off) + "+" +
                        std::to_string(len),
                    [&](int fa, int fb) {
                      return same("  fallocate", outcome(::fallocate(fa, mode, off_t(off), off_t(len))),
                                  outcome(::fallocate(fb, mode, off_t(off), off_t(len))));
                    });
    }
    if (kind < 68) {  // copy_file_range, often whole aligned ranges (clones)
      ++counts_["copy_file_range"];
      const std::string src = pick();
      std::uint64_t off_in = offset(), off_out = rnd(2) ? off_in : offset();
      if (rnd(2)) {
        off_in &= ~std::uint64_t{65535};
        off_out &= ~std::uint64_t{65535};
      }
      std::uint64_t len = std::min(length(std::max(off_in, off_out)) * (1 + rnd(4)), kMaxFile - std::max(off_in, off_out));
      std::string what = "copy_file_range " + src + " @" + std::to_string(off_in) + " -> " + n + " @" +
                         std::to_string(off_out) + " +" + std::to_string(len);
      auto copy = [&](const std::string& from, const std::string& to) -> long {
        int in = ::open(from.c_str(), O_RDONLY);
        if (in < 0) return -errno;
        int out = ::open(to.c_str(), O_WRONLY | O_CREAT, 0644);
        if (out < 0) {
          long e = -errno;
          ::close(in);
          return e;
        }
        loff_t i = loff_t(off_in), o = loff_t(off_out);
        long total = 0;
        std::uint64_t left = len;
        while (left > 0) {
          ssize_t c = ::copy_file_range(in, &i, out, &o, left, 0);
          if (c < 0) {
            total = -errno;
            break;
          }
          if (c == 0) break;
          total += c;
          left -= std::uint64_t(c);
        }
        ::close(in);
        ::close(out);
        return total;
      };
      touched_.push_back(n);
      return same(what, copy(a(src), a(n)), copy(b(src), b(n)));
    }
    if (kind < 74) {  // mmap read or write inside the file
      ++counts_["mmap"];
      const bool write = rnd(2);
      return on_fds(n, O_RDWR, std::string(write ? "mmap write " : "mmap read ") + n, [&](int fa, int fb) {
        struct stat sa {}, sb {};
        ::fstat(fa, &sa);
        ::fstat(fb, &sb);
        if (sa.st_size != sb.st_size) return "size differs before mmap: dhfs " + std::to_string(sa.st_size) +
                                              ", reference " + std::to_string(sb.st_size);
        if (sa.st_size == 0) {
          log("  empty file: no mapping");
          return std::string();
        }
        std::uint64_t size = std::uint64_t(sa.st_size);
        std::uint64_t off = rnd(size), len = std::min<std::uint64_t>(size - off, rnd(64 << 10) + 1);
        log("  @" + std::to_string(off) + "+" + std::to_string(len));
        void* ma = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fa, 0);
        if (ma == MAP_FAILED) return "mmap failed on dhfs: " + errname(errno);
        void* mb = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fb, 0);
        if (mb == MAP_FAILED) {
          ::munmap(ma, size);
          return "mmap failed on the reference: " + errname(errno);
        }
        std::string err;
        if (write) {
          std::string data = random_bytes(len, rng_());
          std::memcpy(static_cast<char*>(ma) + off, data.data(), len);
          std::memcpy(static_cast<char*>(mb) + off, data.data(), len);
          if (::msync(ma, size, MS_SYNC) != 0) err = "msync failed on dhfs: " + errname(errno);
          ::msync(mb, size, MS_SYNC);
        } else {
          err = bytes_diff(std::string_view(static_cast<char*>(ma) + off, len),
                           std::string_view(static_cast<char*>(mb) + off, len));
          if (!err.empty()) err = "mmap read differs: " + err;
        }
        ::munmap(ma, size);
        ::munmap(mb, size);
        return err;
      });
    }
    if (kind < 86) {  // rename or link to another of the names
      const bool rename = kind < 81;
      int (*call)(const char*, const char*) = rename ? ::rename : ::link;
      const std::string op = rename ? "rename" : "link";
      ++counts_[op];
      const std::string to = pick();
      touched_.push_back(to);
      return same(op + " " + n + " " + to, outcome(call(a(n).c_str(), a(to).c_str())),
                  outcome(call(b(n).c_str(), b(to).c_str())));
    }
    if (kind < 91) {  // unlink
      ++counts_["unlink"];
      return same("unlink " + n, outcome(::unlink(a(n).c_str())), outcome(::unlink(b(n).c_str())));
    }
    if (kind < 94) {  // chmod
      ++counts_["chmod"];
      mode_t mode = mode_t(0600 | rnd(0200));
      return same("chmod " + n + " " + std::to_string(mode), outcome(::chmod(a(n).c_str(), mode)),
                  outcome(::chmod(b(n).c_str(), mode)));
    }
    // fsync / fdatasync
    ++counts_["fsync"];
    const bool data_only = rnd(2);
    return on_fds(n, O_RDONLY, std::string(data_only ? "fdatasync " : "fsync ") + n, [&](int fa, int fb) {
      return same("  sync", outcome(data_only ? ::fdatasync(fa) : ::fsync(fa)),
                  outcome(data_only ? ::fdatasync(fb) : ::fsync(fb)));
    });
  }

  std::string compare_metadata() {
    for (const char* n : kNames) {
      struct stat sa {}, sb {};
      long ra = outcome(::lstat(a(n).c_str(), &sa)), rb = outcome(::lstat(b(n).c_str(), &sb));
      if (ra != rb) return std::string("lstat ") + n + ": dhfs " + describe(ra) + ", reference " + describe(rb);
      if (ra < 0) continue;
      if (sa.st_mode != sb.st_mode) return std::string("mode of ") + n + ": dhfs " + std::to_string(sa.st_mode) +
                                           ", reference " + std::to_string(sb.st_mode);
      if (sa.st_size != sb.st_size) return std::string("size of ") + n + ": dhfs " + std::to_string(sa.st_size) +
                                           ", reference " + std::to_string(sb.st_size);
      if (sa.st_nlink != sb.st_nlink) return std::string("nlink of ") + n + ": dhfs " + std::to_string(sa.st_nlink) +
                                             ", reference " + std::to_string(sb.st_nlink);
    }
    return "";
  }

  std::string compare_contents(const std::string& n) {
    struct stat sa {};
    if (::lstat(a(n).c_str(), &sa) != 0 || !S_ISREG(sa.st_mode)) return "";
    std::string d = bytes_diff(read_all(a(n)), read_all(b(n)));
    return d.empty() ? "" : "contents of " + n + " differ: " + d;
  }

  MountedFs& fs_;
  std::string ref_;
  std::uint64_t seed_;
  std::mt19937_64 rng_;
  std::uint64_t step_ = 0;
  std::vector<std::string> touched_;
  std::deque<std::string> tail_;
  std::ofstream log_file_;
  std::map<std::string, std::uint64_t> counts_;
};

}  // namespace

TEST_CASE("fsx: random file operations in lockstep with a tmpfs reference", "[fsx]") {
  const std::uint64_t seed =
      env_u64("DHFS_FSX_SEED", std::uint64_t(std::chrono::system_clock::now().time_since_epoch().count()) & 0xffffffff);
  const std::uint64_t ops = env_u64("DHFS_FSX_OPS", 20000);
  std::printf("fsx: seed %llu, %llu operations (reproduce with DHFS_FSX_SEED=%llu)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(ops),
              static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  MountedFs fs;
  const std::string ref = fs.scratch() + "/fsx-reference";
  SYS(::mkdir(ref.c_str(), 0755));
  MountGuard tmpfs("tmpfs", ref, "tmpfs", 0, "size=256m,mode=0755");
  Fsx fsx(fs, ref, seed);
  const std::string err = fsx.run(ops);
  INFO(err);
  CHECK(err.empty());
  std::printf("fsx: %llu operations compared:", static_cast<unsigned long long>(fsx.steps_done()));
  for (const auto& [name, count] : fsx.counts()) std::printf(" %s %llu", name.c_str(), static_cast<unsigned long long>(count));
  std::printf("\n");
}
