// Tests of fs/device.h (AlignedBuffer, MemDevice, open_device) and of the
// io_uring layer under it (fs/uring.h, fs/unique_fd.h).
//
// Catch2 assertions are not thread-safe, so code running on extra threads
// only reports what went wrong as a string, and the test thread asserts.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <latch>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include "fs/device.h"
#include "fs/device_claim.h"
#include "fs/filesystem.h"
#include "fs/log.h"
#include "fs/mkfs.h"
#include "fs/storage_paths.h"
#include "fs/unique_fd.h"
#include "fs/uring.h"

namespace dhfs {
namespace {

constexpr std::uint32_t kBlock = 4096;
constexpr long kTmpfsMagic = 0x01021994;

std::string temp_dir() {
  const char* t = std::getenv("TMPDIR");
  return t != nullptr && *t != '\0' ? t : "/tmp";
}

// A deterministic, position-dependent pattern, so that a block read from the
// wrong place or a stale block never matches.
void fill_pattern(std::byte* p, std::size_t len, std::uint64_t seed) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::size_t i = 0; i < len; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = static_cast<std::byte>(x);
  }
}

AlignedBuffer pattern_buffer(std::size_t len, std::uint64_t seed) {
  AlignedBuffer b(len);
  fill_pattern(b.data(), len, seed);
  return b;
}

bool same(const std::byte* a, const std::byte* b, std::size_t len) {
  return std::memcmp(a, b, len) == 0;
}

// Reads `len` bytes at `offset` from a file, bypassing the Device.
std::vector<std::byte> read_file(const std::string& path, std::uint64_t offset, std::size_t len) {
  std::vector<std::byte> out(len);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd || ::pread(fd.get(), out.data(), len, static_cast<off_t>(offset)) !=
                 static_cast<ssize_t>(len)) {
    out.clear();
  }
  return out;
}

// Removes a path when the test ends, however it ends.
struct RemoveOnExit {
  std::string path;
  bool dir = false;
  ~RemoveOnExit() {
    if (path.empty()) return;
    if (dir) {
      ::rmdir(path.c_str());
    } else {
      ::unlink(path.c_str());
    }
  }
};

// A sparse image file of `size` bytes in `dir`, deleted at the end.
class TempImage {
 public:
  explicit TempImage(std::uint64_t size, const std::string& dir = temp_dir()) {
    std::string name = dir + "/dhfs-device-test-XXXXXX";
    UniqueFd fd(::mkstemp(name.data()));
    REQUIRE(fd);
    file_.path = name;
    REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
  }
  const std::string& path() const { return file_.path; }

 private:
  RemoveOnExit file_;
};

// A fresh empty directory, deleted at the end.
class TempDir {
 public:
  TempDir() {
    std::string name = temp_dir() + "/dhfs-device-test-dir-XXXXXX";
    REQUIRE(::mkdtemp(name.data()) != nullptr);
    dir_.path = name;
    dir_.dir = true;
  }
  const std::string& path() const { return dir_.path; }

 private:
  RemoveOnExit dir_;
};

std::unique_ptr<Device> must_open(const std::string& path, DeviceOpenOptions opts = {}) {
  std::string error;
  auto dev = open_device(path, opts, error);
  INFO(error);
  REQUIRE(dev != nullptr);
  CHECK(error.empty());
  return dev;
}

std::string open_error(const std::string& path, DeviceOpenOptions opts = {}) {
  std::string error;
  auto dev = open_device(path, opts, error);
  CHECK(dev == nullptr);
  return error;
}

// Whether the kernel accepts O_DIRECT for this file, i.e. whether the
// Device has to insist on aligned buffers.
bool direct_io_possible(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT));
  return fd.valid();
}

// A batch of 200 mixed reads and writes (more than a ring's 64 entries), of
// 1 to 4 blocks each, on disjoint ranges (the order inside a batch is not
// defined). Needs a device of at least 1000 blocks. The device is first filled with a known pattern; afterwards
// every read must have seen it and every write must be in place. Returns ""
// or what went wrong.
std::string mixed_batch_problem(Device& dev, std::uint64_t seed) {
  constexpr int kIos = 200;
  const std::size_t total = dev.size_bytes();
  AlignedBuffer before = pattern_buffer(total, seed);
  if (const int r = dev.write(0, before.data(), static_cast<std::uint32_t>(total)); r != 0) {
    return "initial fill failed: " + std::to_string(r);
  }

  // Slot s is the 5-block range at s * 5 blocks; the I/Os visit the slots in
  // a scattered order (73 is coprime with 200) instead of one sequential run.
  if (total < kIos * 5 * kBlock) return "test setup: device too small";
  std::vector<AlignedBuffer> bufs;
  std::vector<DeviceIo> batch;
  std::vector<std::byte> expect(before.data(), before.data() + total);
  for (int k = 0; k < kIos; ++k) {
    const std::uint64_t offset = std::uint64_t{(k * 73u) % kIos} * 5 * kBlock;
    const std::uint32_t len = (k % 4 + 1) * kBlock;
    const bool write = k % 3 != 0;
    bufs.push_back(write ? pattern_buffer(len, seed * 1000 + k) : AlignedBuffer(len));
    batch.push_back({write ? DeviceIo::Op::Write : DeviceIo::Op::Read, offset,
                     bufs.back().data(), len});
    if (write) std::memcpy(expect.data() + offset, bufs.back().data(), len);
  }

  if (const int r = dev.submit(batch); r != 0) return "batch failed: " + std::to_string(r);
  for (const DeviceIo& io : batch) {
    if (io.op == DeviceIo::Op::Read &&
        !same(static_cast<std::byte*>(io.buf), before.data() + io.offset, io.len)) {
      return "read at " + std::to_string(io.offset) + " returned wrong data";
    }
  }
  AlignedBuffer after(total);
  if (const int r = dev.read(0, after.data(), static_cast<std::uint32_t>(total)); r != 0) {
    return "read back failed: " + std::to_string(r);
  }
  if (!same(after.data(), expect.data(), total)) return "device content wrong after batch";
  return "";
}

// Runs `fn` on a new thread and returns its result.
template <typename Fn>
auto on_new_thread(Fn fn) {
  decltype(fn()) result{};
  std::thread t([&] { result = fn(); });
  t.join();
  return result;
}

// Attaches an image file to a free loop device and detaches it again on
// destruction (losetup -d also works while the device is still open: the
// kernel then detaches on last close).
class LoopDevice {
 public:
  explicit LoopDevice(const std::string& image) {
    const std::string cmd = "losetup -f --show '" + image + "' 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) {
      output_ = "popen failed";
      return;
    }
    char line[512];
    while (std::fgets(line, sizeof line, p) != nullptr) output_ += line;
    const int status = ::pclose(p);
    while (!output_.empty() && (output_.back() == '\n' || output_.back() == ' ')) {
      output_.pop_back();
    }
    if (status == 0 && output_.rfind("/dev/", 0) == 0) path_ = output_;
  }
  ~LoopDevice() {
    if (path_.empty()) return;
    const std::string cmd = "losetup -d '" + path_ + "' 2>/dev/null";
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "warning: could not detach %s\n", path_.c_str());
    }
  }
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;

  bool attached() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  const std::string& output() const { return output_; }

 private:
  std::string path_;
  std::string output_;
};

}  // namespace

// ---- UniqueFd, AlignedBuffer ------------------------------------------------

TEST_CASE("UniqueFd closes what it owns, exactly once", "[device]") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const int read_end = fds[0];
  {
    UniqueFd a(read_end);
    UniqueFd w(fds[1]);
    UniqueFd b(std::move(a));
    CHECK_FALSE(a.valid());
    CHECK(b.get() == read_end);
    UniqueFd c;
    c = std::move(b);
    CHECK(c.get() == read_end);
    CHECK(::fcntl(read_end, F_GETFD) != -1);
    const int released = w.release();
    CHECK_FALSE(w);
    w.reset(released);  // back under ownership
  }
  CHECK(::fcntl(read_end, F_GETFD) == -1);
  CHECK(::fcntl(fds[1], F_GETFD) == -1);
}

TEST_CASE("AlignedBuffer is 4 KiB aligned, zero-filled and move-only", "[device]") {
  static_assert(!std::is_copy_constructible_v<AlignedBuffer>);
  static_assert(!std::is_copy_assignable_v<AlignedBuffer>);
  static_assert(std::is_nothrow_move_constructible_v<AlignedBuffer>);
  static_assert(std::is_nothrow_move_assignable_v<AlignedBuffer>);

  AlignedBuffer empty;
  CHECK(empty.data() == nullptr);
  CHECK(empty.size() == 0);
  CHECK(empty.span().empty());

  AlignedBuffer b(3 * kBlock + 5);
  REQUIRE(b.data() != nullptr);
  CHECK(reinterpret_cast<std::uintptr_t>(b.data()) % kBlock == 0);
  CHECK(b.size() == 3 * kBlock + 5);
  CHECK(std::all_of(b.span().begin(), b.span().end(), [](std::byte x) { return x == std::byte{0}; }));

  fill_pattern(b.data(), b.size(), 7);
  std::byte* const p = b.data();
  AlignedBuffer moved(std::move(b));
  CHECK(b.data() == nullptr);
  CHECK(b.size() == 0);
  CHECK(moved.data() == p);

  AlignedBuffer other(kBlock);
  other = std::move(moved);  // frees other's own buffer (ASan would see a leak)
  CHECK(other.data() == p);
  CHECK(moved.data() == nullptr);
  const AlignedBuffer expect = pattern_buffer(3 * kBlock + 5, 7);
  CHECK(same(other.data(), expect.data(), other.size()));

  SECTION("ensure() keeps a buffer that is big enough") {
    other.ensure(kBlock);
    CHECK(other.data() == p);
    CHECK(same(other.data(), expect.data(), other.size()));
  }
  SECTION("ensure() grows into a fresh aligned, zeroed buffer") {
    other.ensure(16 * kBlock);
    CHECK(other.size() == 16 * kBlock);
    CHECK(reinterpret_cast<std::uintptr_t>(other.data()) % kBlock == 0);
    CHECK(std::all_of(other.span().begin(), other.span().end(),
                      [](std::byte x) { return x == std::byte{0}; }));
  }
}

TEST_CASE("ScratchBuffer lends a thread's buffer again, as it was, leases at once get their own", "[device]") {
  // On a thread of its own, whose pool starts empty.
  std::thread([] {
    std::byte* first;
    {
      ScratchBuffer a(64 * kBlock);
      first = a.data();
      CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % kBlock == 0);
      CHECK(a.size() == 64 * kBlock);
      std::memset(a.data(), 0x5a, a.size());
    }
    {
      ScratchBuffer again(16 * kBlock);  // smaller: the same buffer, not zeroed
      CHECK(again.data() == first);
      CHECK(again.size() == 16 * kBlock);
      CHECK(again.data()[0] == std::byte{0x5a});
      ScratchBuffer nested(16 * kBlock);  // in use at once: another one
      CHECK(nested.data() != again.data());
      ScratchBuffer third(16 * kBlock);
      CHECK(third.data() != nested.data());
      CHECK(third.data() != again.data());
    }
    {
      // Larger than a thread keeps: freed on return, not kept.
      ScratchBuffer big(ScratchBuffer::kKeptBytes + kBlock);
      CHECK(big.size() == ScratchBuffer::kKeptBytes + kBlock);
      big.data()[big.size() - 1] = std::byte{1};  // ASan: it is all there
    }
  }).join();
}

// ---- MemDevice --------------------------------------------------------------

TEST_CASE("MemDevice reads back what was written", "[device]") {
  MemDevice dev(64 * kBlock);
  CHECK(dev.size_bytes() == 64 * kBlock);
  CHECK_FALSE(dev.read_only());
  CHECK(dev.describe() == "memory device");

  const AlignedBuffer data = pattern_buffer(2 * kBlock, 1);
  REQUIRE(dev.write(5 * kBlock, data.data(), 2 * kBlock) == 0);
  CHECK(same(dev.bytes().data() + 5 * kBlock, data.data(), 2 * kBlock));

  AlignedBuffer a(kBlock), b(kBlock);
  const DeviceIo batch[] = {{DeviceIo::Op::Read, 6 * kBlock, a.data(), kBlock},
                            {DeviceIo::Op::Read, 5 * kBlock, b.data(), kBlock},
                            {DeviceIo::Op::Read, 0, nullptr, 0}};  // zero length: no-op
  REQUIRE(dev.submit(batch) == 0);
  CHECK(same(a.data(), data.data() + kBlock, kBlock));
  CHECK(same(b.data(), data.data(), kBlock));
  CHECK(dev.flush() == 0);
}

TEST_CASE("MemDevice refuses misaligned and out-of-range I/O", "[device]") {
  MemDevice dev(16 * kBlock);
  AlignedBuffer buf(2 * kBlock);

  CHECK(dev.read(100, buf.data(), kBlock) == -EINVAL);
  CHECK(dev.read(0, buf.data(), 100) == -EINVAL);
  CHECK(dev.read(0, buf.data() + 512, kBlock) == -EINVAL);  // buffer not 4 KiB aligned
  CHECK(dev.read(0, nullptr, kBlock) == -EINVAL);
  CHECK(dev.read(16 * kBlock, buf.data(), kBlock) == -EIO);
  CHECK(dev.read(15 * kBlock, buf.data(), 2 * kBlock) == -EIO);
  CHECK(dev.write(16 * kBlock, buf.data(), kBlock) == -EIO);
  // offset + len wraps around 2^64
  CHECK(dev.read(std::numeric_limits<std::uint64_t>::max() - kBlock + 1, buf.data(), 2 * kBlock) ==
        -EIO);
  CHECK(dev.read(15 * kBlock, buf.data(), kBlock) == 0);  // the last block is fine

  SECTION("a bad request fails the whole batch before anything is written") {
    const AlignedBuffer data = pattern_buffer(kBlock, 3);
    const DeviceIo batch[] = {{DeviceIo::Op::Write, 0, const_cast<std::byte*>(data.data()), kBlock},
                              {DeviceIo::Op::Write, 20 * kBlock, buf.data(), kBlock}};
    CHECK(dev.submit(batch) == -EIO);
    CHECK(std::all_of(dev.bytes().begin(), dev.bytes().end(),
                      [](std::byte x) { return x == std::byte{0}; }));
  }
}

TEST_CASE("MemDevice serves a batch larger than a ring", "[device]") {
  MemDevice dev(1024 * kBlock);
  CHECK(mixed_batch_problem(dev, 11) == "");
}

// ---- Uring and the pread/pwrite fallback -------------------------------------

TEST_CASE("Uring runs a batch deeper than its queue, and reports errors", "[device][uring]") {
  int err = 0;
  auto ring = Uring::create(4, err);
  if (ring == nullptr) {
    WARN("SKIP: io_uring is not available here (" << std::strerror(-err) << ")");
    return;
  }
  CHECK(ring->depth() == 4);
  CHECK(Uring::create(0, err) == nullptr);
  CHECK(err == -EINVAL);

  TempImage img(64 * kBlock);
  UniqueFd fd(::open(img.path().c_str(), O_RDWR | O_CLOEXEC));
  REQUIRE(fd);

  // 50 one-block writes through a ring of 4, then all of them read back.
  std::vector<AlignedBuffer> out, in;
  std::vector<DeviceIo> writes, reads;
  for (std::uint32_t i = 0; i < 50; ++i) {
    out.push_back(pattern_buffer(kBlock, 100 + i));
    in.emplace_back(kBlock);
    const std::uint64_t off = (i * 7 % 64) * kBlock;  // 7 and 64 coprime: distinct blocks
    writes.push_back({DeviceIo::Op::Write, off, out.back().data(), kBlock});
    reads.push_back({DeviceIo::Op::Read, off, in.back().data(), kBlock});
  }
  REQUIRE(ring->run(fd.get(), writes) == 0);
  REQUIRE(ring->run(fd.get(), reads) == 0);
  for (std::size_t i = 0; i < out.size(); ++i) {
    INFO("I/O " << i);
    CHECK(same(in[i].data(), out[i].data(), kBlock));
  }

  SECTION("the error of a failed request comes back; the ring stays usable") {
    UniqueFd ro(::open(img.path().c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(ro);
    CHECK(ring->run(ro.get(), writes) == -EBADF);
    CHECK_FALSE(ring->broken());
    CHECK(ring->run(fd.get(), reads) == 0);
  }
  SECTION("a read past the end of the file cannot complete: -EIO") {
    REQUIRE(::ftruncate(fd.get(), 10 * kBlock + 100) == 0);
    AlignedBuffer buf(2 * kBlock);
    const DeviceIo past{DeviceIo::Op::Read, 20 * kBlock, buf.data(), kBlock};
    CHECK(ring->run(fd.get(), {&past, 1}) == -EIO);
    // Short first (4196 bytes), then nothing for the remainder.
    const DeviceIo straddle{DeviceIo::Op::Read, 9 * kBlock, buf.data(), 2 * kBlock};
    CHECK(ring->run(fd.get(), {&straddle, 1}) == -EIO);
  }
}

TEST_CASE("small batches are polled by one thread at a time, and not while polls run out of time", "[device][uring]") {
  SmallBatchPolling p;
  REQUIRE(p.begin());  // nothing measured yet: poll
  CHECK_FALSE(p.begin());  // another thread is polling
  p.polled(true);
  p.done();
  CHECK(p.begin());
  p.polled(true);
  p.done();

  // One poll out of time (a slow request on the host) leaves polling on.
  REQUIRE(p.begin());
  p.polled(false);
  p.done();
  REQUIRE(p.begin());
  p.polled(true);
  p.done();

  // A device slower than the window (a disk): after a few polls out of time
  // nobody polls, except one small batch in kProbeEvery.
  int polls = 0;
  while (p.begin()) {
    p.polled(false);
    p.done();
    REQUIRE(++polls < 20);
  }
  CHECK(polls >= 3);
  // The call that ended the loop was the first of 4 * kProbeEvery batches.
  int probes = 0;
  for (unsigned i = 1; i < 4 * SmallBatchPolling::kProbeEvery; ++i) {
    if (!p.begin()) continue;
    ++probes;
    p.polled(false);
    p.done();
  }
  CHECK(probes == 4);

  // Fast again: the probes come back in time and polling resumes.
  int calls = 0;
  for (int in_a_row = 0; in_a_row < 2; ++calls) {
    REQUIRE(calls < 100);
    if (!p.begin()) {
      in_a_row = 0;
      continue;
    }
    ++in_a_row;
    p.polled(true);
    p.done();
  }
  CHECK(calls > 2);  // it waited for a probe first
}

TEST_CASE("run_sync_io has the same contract as the ring", "[device][uring]") {
  TempImage img(16 * kBlock);
  UniqueFd fd(::open(img.path().c_str(), O_RDWR | O_CLOEXEC));
  REQUIRE(fd);
  const AlignedBuffer data = pattern_buffer(4 * kBlock, 5);
  AlignedBuffer back(4 * kBlock);
  const DeviceIo w{DeviceIo::Op::Write, 8 * kBlock, const_cast<std::byte*>(data.data()),
                   4 * kBlock};
  const DeviceIo r{DeviceIo::Op::Read, 8 * kBlock, back.data(), 4 * kBlock};
  REQUIRE(run_sync_io(fd.get(), {&w, 1}) == 0);
  REQUIRE(run_sync_io(fd.get(), {&r, 1}) == 0);
  CHECK(same(back.data(), data.data(), 4 * kBlock));

  REQUIRE(::ftruncate(fd.get(), 9 * kBlock + 100) == 0);
  CHECK(run_sync_io(fd.get(), {&r, 1}) == -EIO);
  UniqueFd ro(::open(img.path().c_str(), O_RDONLY | O_CLOEXEC));
  CHECK(run_sync_io(ro.get(), {&w, 1}) == -EBADF);
}

// ---- FileDevice on an image file -----------------------------------------------

TEST_CASE("an image file round-trips data and makes it durable", "[device]") {
  TempImage img(256 * kBlock);
  auto dev = must_open(img.path());
  CHECK(dev->size_bytes() == 256 * kBlock);
  CHECK_FALSE(dev->read_only());
  CHECK(dev->describe() == img.path());

  const AlignedBuffer data = pattern_buffer(3 * kBlock, 9);
  REQUIRE(dev->write(10 * kBlock, data.data(), 3 * kBlock) == 0);
  REQUIRE(dev->flush() == 0);
  AlignedBuffer back(3 * kBlock);
  REQUIRE(dev->read(10 * kBlock, back.data(), 3 * kBlock) == 0);
  CHECK(same(back.data(), data.data(), 3 * kBlock));

  const auto raw = read_file(img.path(), 10 * kBlock, 3 * kBlock);
  REQUIRE(raw.size() == 3 * kBlock);
  CHECK(same(raw.data(), data.data(), 3 * kBlock));
}

// DeviceIo::cached: reads and writes through the medium's page cache and
// direct ones see each other's data, in either order.
TEST_CASE("cached and direct reads and writes of an image file see each other", "[device]") {
  TempImage img(64 * kBlock);
  auto dev = must_open(img.path());
  using Op = DeviceIo::Op;
  auto io = [](Op op, std::uint64_t block, const AlignedBuffer& buf, bool cached) {
    return DeviceIo{.op = op, .offset = block * kBlock, .buf = const_cast<std::byte*>(buf.data()),
                    .len = static_cast<std::uint32_t>(buf.size()), .cached = cached};
  };
  const AlignedBuffer a = pattern_buffer(2 * kBlock, 3), b = pattern_buffer(2 * kBlock, 4);
  const AlignedBuffer c = pattern_buffer(2 * kBlock, 5);
  const DeviceIo writes[] = {io(Op::Write, 0, a, true), io(Op::Write, 8, b, false)};
  REQUIRE(dev->submit(writes) == 0);

  AlignedBuffer r1(2 * kBlock), r2(2 * kBlock);
  const DeviceIo reads[] = {io(Op::Read, 0, r1, true), io(Op::Read, 8, r2, true)};
  REQUIRE(dev->submit(reads) == 0);
  CHECK(same(r1.data(), a.data(), 2 * kBlock));
  CHECK(same(r2.data(), b.data(), 2 * kBlock));

  // A direct write over blocks a cached read brought into the cache: the
  // next cached read sees the new bytes.
  const DeviceIo over[] = {io(Op::Write, 0, c, false)};
  REQUIRE(dev->submit(over) == 0);
  const DeviceIo again[] = {io(Op::Read, 0, r1, true)};
  REQUIRE(dev->submit(again) == 0);
  CHECK(same(r1.data(), c.data(), 2 * kBlock));

  // A cached write read back directly, before any flush.
  const DeviceIo cached_write[] = {io(Op::Write, 16, b, true)};
  REQUIRE(dev->submit(cached_write) == 0);
  AlignedBuffer direct(2 * kBlock);
  REQUIRE(dev->read(16 * kBlock, direct.data(), 2 * kBlock) == 0);
  CHECK(same(direct.data(), b.data(), 2 * kBlock));
}

// The page cache state of a file's pages, from cachestat(2) (Linux 6.5;
// Debian 12's headers predate it, and its number is the same on every
// architecture). Empty where the kernel lacks it.
struct PageCacheState {
  std::uint64_t cached = 0;               // pages in the page cache
  std::uint64_t dirty_or_writeback = 0;   // of those, not yet on the medium
};
// Of the whole file, or of `len` bytes at `off`.
std::optional<PageCacheState> page_cache_state(int fd, std::uint64_t off = 0, std::uint64_t len = 0) {
  struct Range {
    std::uint64_t off, len;
  } range{off, len};
  struct Stat {
    std::uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
  } st{};
  constexpr long kCachestat = 451;
  if (::syscall(kCachestat, fd, &range, &st, 0) != 0) return std::nullopt;
  return PageCacheState{st.nr_cache, st.nr_dirty + st.nr_writeback};
}

// For the tests that watch the page cache: a disk-backed TMPDIR, and a
// kernel with cachestat(2). False (with the reason WARNed) where either is
// missing.
bool page_cache_watchable() {
  struct statfs sfs {};
  REQUIRE(::statfs(temp_dir().c_str(), &sfs) == 0);
  if (sfs.f_type == kTmpfsMagic) {
    WARN("SKIP: " << temp_dir() << " is a tmpfs, whose pages are never written back");
    return false;
  }
  TempImage probe_img(kBlock);
  UniqueFd probe(::open(probe_img.path().c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(probe);
  if (!page_cache_state(probe.get())) {
    WARN("SKIP: no cachestat(2) in this kernel (before 6.5), the page cache cannot be inspected");
    return false;
  }
  return true;
}

// A 4 MiB image file opened as a Device, and a second descriptor of it to
// ask cachestat(2) about.
struct WatchedImage {
  TempImage img{1024 * kBlock};
  std::unique_ptr<Device> dev = must_open(img.path());
  UniqueFd probe{::open(img.path().c_str(), O_RDONLY | O_CLOEXEC)};
};

TEST_CASE("cached writes past a MiB are written back without a flush", "[device]") {
  if (!page_cache_watchable()) return;
  WatchedImage w;
  REQUIRE(w.probe);
  auto& dev = w.dev;
  const UniqueFd& probe = w.probe;
  const AlignedBuffer data = pattern_buffer(kBlock, 21);
  auto cached_write = [&](std::uint64_t block) {
    const DeviceIo io{.op = DeviceIo::Op::Write, .offset = block * kBlock, .buf = const_cast<std::byte*>(data.data()),
                      .len = kBlock, .cached = true};
    return dev->submit({&io, 1});
  };
  // Half a MiB, every other block: it stays dirty (the kernel's own
  // write-back waits 30 s by default).
  for (std::uint64_t b = 0; b < 256; b += 2) REQUIRE(cached_write(b) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto state = page_cache_state(probe.get());
  REQUIRE(state);
  CHECK(state->dirty_or_writeback == 128);
  // Another MiB crosses the threshold: everything dirty is written back,
  // the first half MiB too, with no flush().
  for (std::uint64_t b = 512; b < 768; ++b) REQUIRE(cached_write(b) == 0);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((state = page_cache_state(probe.get())) && state->dirty_or_writeback > 0 &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  REQUIRE(state);
  CHECK(state->dirty_or_writeback == 0);
}

TEST_CASE("an image file serves a batch of 200 mixed I/Os", "[device][uring]") {
  TempImage img(1024 * kBlock);
  auto dev = must_open(img.path());
  CHECK(mixed_batch_problem(*dev, 21) == "");

  SECTION("also on a thread without io_uring (pread/pwrite fallback)") {
    const std::string problem = on_new_thread([&] {
      disable_thread_uring();
      if (thread_ring() != nullptr) return std::string("thread still has a ring");
      return mixed_batch_problem(*dev, 22);
    });
    CHECK(problem == "");
  }
}

TEST_CASE("four threads do I/O at once, each on its own ring", "[device][uring]") {
  constexpr int kThreads = 4;
  constexpr std::uint64_t kRegion = 256 * kBlock;
  TempImage img(kThreads * kRegion);
  auto dev = must_open(img.path());

  std::vector<std::string> problems(kThreads);
  std::vector<const Uring*> rings(kThreads, nullptr);
  std::latch all_have_rings(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      rings[t] = thread_ring();
      // Keep every thread alive until all have their ring, so that rings
      // cannot be recycled from one thread to the next.
      all_have_rings.arrive_and_wait();
      const std::uint64_t base = t * kRegion;
      for (int round = 0; round < 20 && problems[t].empty(); ++round) {
        // 32 writes of one block scattered over the region, then read back.
        std::vector<AlignedBuffer> out, in;
        std::vector<DeviceIo> writes, reads;
        for (std::uint64_t i = 0; i < 32; ++i) {
          const std::uint64_t off = base + ((i * 37 + round) % 256) * kBlock;
          out.push_back(pattern_buffer(kBlock, t * 100000 + round * 100 + i));
          in.emplace_back(kBlock);
          writes.push_back({DeviceIo::Op::Write, off, out.back().data(), kBlock});
          reads.push_back({DeviceIo::Op::Read, off, in.back().data(), kBlock});
        }
        if (const int r = dev->submit(writes); r != 0) {
          problems[t] = "write batch failed: " + std::to_string(r);
        } else if (const int r2 = dev->submit(reads); r2 != 0) {
          problems[t] = "read batch failed: " + std::to_string(r2);
        } else {
          for (std::size_t i = 0; i < out.size(); ++i) {
            if (!same(in[i].data(), out[i].data(), kBlock)) {
              problems[t] = "round " + std::to_string(round) + ": block " + std::to_string(i) +
                            " read back wrong";
              break;
            }
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    INFO("thread " << t);
    CHECK(problems[t] == "");
  }
  if (thread_ring() == nullptr) {
    WARN("SKIP ring check: io_uring is not available here, threads used pread/pwrite");
    return;
  }
  const std::set<const Uring*> distinct(rings.begin(), rings.end());
  CHECK(distinct.size() == kThreads);
  CHECK(distinct.count(nullptr) == 0);
  CHECK(distinct.count(thread_ring()) == 0);
}

TEST_CASE("FileDevice validates requests before they reach the kernel", "[device]") {
  TempImage img(16 * kBlock);
  auto dev = must_open(img.path());
  AlignedBuffer buf(2 * kBlock);

  CHECK(dev->read(512, buf.data(), kBlock) == -EINVAL);
  CHECK(dev->read(0, buf.data(), 512) == -EINVAL);
  CHECK(dev->read(16 * kBlock, buf.data(), kBlock) == -EIO);
  CHECK(dev->read(15 * kBlock, buf.data(), 2 * kBlock) == -EIO);
  CHECK(dev->read(std::numeric_limits<std::uint64_t>::max() - kBlock + 1, buf.data(), 2 * kBlock) ==
        -EIO);

  // Buffer alignment is only demanded where O_DIRECT is in force; on a
  // filesystem without direct I/O the device falls back to buffered I/O.
  const int unaligned = dev->read(0, buf.data() + 512, kBlock);
  if (direct_io_possible(img.path())) {
    CHECK(unaligned == -EINVAL);
  } else {
    CHECK(unaligned == 0);
  }

  const AlignedBuffer data = pattern_buffer(kBlock, 4);
  const DeviceIo batch[] = {{DeviceIo::Op::Write, 0, const_cast<std::byte*>(data.data()), kBlock},
                            {DeviceIo::Op::Write, 4 * kBlock, buf.data(), 100}};
  CHECK(dev->submit(batch) == -EINVAL);
  const auto raw = read_file(img.path(), 0, kBlock);
  REQUIRE(raw.size() == kBlock);
  CHECK(std::all_of(raw.begin(), raw.end(), [](std::byte x) { return x == std::byte{0}; }));
}

TEST_CASE("an image on tmpfs works with or without O_DIRECT", "[device]") {
  struct statfs fs {};
  if (::statfs("/dev/shm", &fs) != 0 || fs.f_type != kTmpfsMagic) {
    WARN("SKIP: /dev/shm is not a tmpfs");
    return;
  }
  TempImage img(1024 * kBlock, "/dev/shm");
  auto dev = must_open(img.path());
  CHECK(mixed_batch_problem(*dev, 31) == "");
  AlignedBuffer buf(2 * kBlock);
  const int unaligned = dev->read(0, buf.data() + 512, kBlock);
  CHECK(unaligned == (direct_io_possible(img.path()) ? -EINVAL : 0));
}

// Bytes of the host filesystem the file takes (st_blocks). SEEK_HOLE cannot
// tell: it reports preallocated, never written space as a hole.
std::uint64_t allocated_bytes(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return static_cast<std::uint64_t>(st.st_blocks) * 512;
}

TEST_CASE("an image file's superblocks and journal get host space at mkfs and again at mount", "[device]") {
  TempImage img(64ULL << 20);
  REQUIRE(allocated_bytes(img.path()) == 0);  // sparse, nothing allocated
  Superblock sb;
  {
    auto dev = must_open(img.path());
    std::string error;
    const bool formatted = format_device(*dev, FormatOptions{}, &sb, error);
    INFO(error);
    REQUIRE(formatted);
  }
  // Everything outside the data area, and the initial checkpoint (a few
  // blocks; the rest of the data area stays sparse).
  const std::uint64_t fixed = (sb.data_start + 1) * kBlock;
  CHECK(allocated_bytes(img.path()) >= fixed);
  CHECK(allocated_bytes(img.path()) < fixed + (1 << 20));

  // An image made before mkfs preallocated (or copied sparse): the journal
  // is a hole again (it holds only zeros after mkfs). A mount backs it.
  {
    UniqueFd fd(::open(img.path().c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE(fd);
    const std::uint64_t from = (sb.journal_start + 1) * kBlock;
    if (::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(from),
                    static_cast<off_t>(sb.data_start * kBlock - from)) != 0) {
      WARN("SKIP the mount half: " << temp_dir() << " cannot punch holes (" << std::strerror(errno) << ")");
      return;
    }
    REQUIRE(allocated_bytes(img.path()) < fixed / 2);
  }
  std::string error;
  auto fs = FileSystem::open(must_open(img.path()), FsOptions{}, error);
  INFO(error);
  REQUIRE(fs);
  CHECK(allocated_bytes(img.path()) >= fixed);
  CHECK(fs->shutdown() == 0);
}

// mkfs over an image an earlier filesystem filled: its data area goes back
// to the host (holes), as mke2fs discards; -K (FormatOptions::discard off)
// keeps it.
TEST_CASE("mkfs discards the data area unless told not to", "[device][mkfs]") {
  for (const bool discard : {true, false}) {
    INFO("discard " << discard);
    TempImage img(64ULL << 20);
    {
      UniqueFd fd(::open(img.path().c_str(), O_RDWR | O_CLOEXEC));
      REQUIRE(fd);
      const std::string old(40ULL << 20, 'x');
      REQUIRE(::pwrite(fd.get(), old.data(), old.size(), 20LL << 20) == static_cast<ssize_t>(old.size()));
      REQUIRE(::fsync(fd.get()) == 0);
    }
    REQUIRE(allocated_bytes(img.path()) >= (40ULL << 20));
    Superblock sb;
    {
      auto dev = must_open(img.path());
      std::string error;
      FormatOptions opts;
      opts.discard = discard;
      const bool formatted = format_device(*dev, opts, &sb, error);
      INFO(error);
      REQUIRE(formatted);
    }
    const std::uint64_t fixed = (sb.data_start + 1) * kBlock;
    if (discard)
      CHECK(allocated_bytes(img.path()) < fixed + (1 << 20));
    else
      CHECK(allocated_bytes(img.path()) >= (40ULL << 20));
    std::string error;
    auto fs = FileSystem::open(must_open(img.path()), FsOptions{}, error);
    INFO(error);
    REQUIRE(fs);
    CHECK(fs->stats().free_blocks > 0);
    CHECK(fs->shutdown() == 0);
  }
}

TEST_CASE("a failed device I/O is logged with the medium, the blocks and the cause, at most once a second",
          "[device]") {
  TempImage img(16 * kBlock);
  auto dev = must_open(img.path());
  std::vector<std::string> lines;
  log::Capture capture([&](log::Level level, std::string_view line) {
    CHECK(level == log::Level::kError);
    lines.emplace_back(line);
  });
  AlignedBuffer buf(2 * kBlock);
  // Past the end of the medium: fails with EIO before reaching it.
  CHECK(dev->write(15 * kBlock, buf.data(), 2 * kBlock) == -EIO);
  CHECK(dev->read(16 * kBlock, buf.data(), kBlock) == -EIO);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0] == img.path() + ": write of 2 blocks from block 15 failed: " + std::strerror(EIO));
  // Successful I/O says nothing.
  CHECK(dev->write(0, buf.data(), kBlock) == 0);
  CHECK(lines.size() == 1);
}

TEST_CASE("a log throttle lets one message through per interval and counts the rest", "[device]") {
  log::Throttle throttle(std::chrono::seconds(1));
  const auto t0 = std::chrono::steady_clock::now();
  std::uint64_t held_back = 99;
  REQUIRE(throttle.allow(held_back, t0));
  CHECK(held_back == 0);
  CHECK_FALSE(throttle.allow(held_back, t0 + std::chrono::milliseconds(10)));
  CHECK_FALSE(throttle.allow(held_back, t0 + std::chrono::milliseconds(999)));
  REQUIRE(throttle.allow(held_back, t0 + std::chrono::seconds(1)));
  CHECK(held_back == 2);
  // The next interval starts at the message let through.
  CHECK_FALSE(throttle.allow(held_back, t0 + std::chrono::milliseconds(1500)));
  REQUIRE(throttle.allow(held_back, t0 + std::chrono::seconds(3)));
  CHECK(held_back == 1);
}

TEST_CASE("mount_type_of names the filesystem a path is on", "[device]") {
  CHECK(mount_type_of("/proc/self") == "proc");
  CHECK(mount_type_of("/sys/kernel") == "sysfs");
  CHECK(mount_type_of("/") != "");
  CHECK(mount_type_of("/does/not/exist") == "");
}

TEST_CASE("an exclusive open refuses a second one", "[device]") {
  TempImage img(16 * kBlock);
  auto first = must_open(img.path());
  const std::string busy = img.path() + ": in use by another dhfs or fsck.dhfs";

  CHECK(open_error(img.path()) == busy);
  CHECK(open_error(img.path(), {.read_only = true, .exclusive = true}) == busy);
  // A non-exclusive opener is not stopped.
  auto shared = must_open(img.path(), {.read_only = true, .exclusive = false});
  shared.reset();

  first.reset();  // the lock goes with the descriptor
  CHECK(must_open(img.path()) != nullptr);
}

TEST_CASE("open_device explains what it refuses", "[device]") {
  TempDir dir;
  SECTION("a missing path") {
    const std::string missing = dir.path() + "/missing.img";
    CHECK(open_error(missing) == missing + ": No such file or directory");
  }
  SECTION("a directory") {
    CHECK(open_error(dir.path()) == dir.path() + ": not a block device or regular file");
  }
  SECTION("a character device") {
    CHECK(open_error("/dev/null") == "/dev/null: not a block device or regular file");
  }
}

TEST_CASE("a read-only device reads and refuses writes", "[device]") {
  TempImage img(16 * kBlock);
  const AlignedBuffer data = pattern_buffer(kBlock, 8);
  {
    auto rw = must_open(img.path());
    REQUIRE(rw->write(2 * kBlock, data.data(), kBlock) == 0);
  }
  auto dev = must_open(img.path(), {.read_only = true, .exclusive = true});
  CHECK(dev->read_only());
  AlignedBuffer back(kBlock);
  REQUIRE(dev->read(2 * kBlock, back.data(), kBlock) == 0);
  CHECK(same(back.data(), data.data(), kBlock));
  CHECK(dev->write(2 * kBlock, data.data(), kBlock) == -EROFS);
  const DeviceIo batch[] = {{DeviceIo::Op::Read, 0, back.data(), kBlock},
                            {DeviceIo::Op::Write, 0, back.data(), kBlock}};
  CHECK(dev->submit(batch) == -EROFS);
  CHECK(dev->flush() == 0);
}

TEST_CASE("the size is rounded down to whole blocks", "[device]") {
  TempImage img(3 * kBlock + 100);
  auto dev = must_open(img.path());
  CHECK(dev->size_bytes() == 3 * kBlock);
  AlignedBuffer buf(kBlock);
  CHECK(dev->read(2 * kBlock, buf.data(), kBlock) == 0);
  CHECK(dev->read(3 * kBlock, buf.data(), kBlock) == -EIO);

  TempImage tiny(100);
  CHECK(must_open(tiny.path())->size_bytes() == 0);
}

// ---- FileDevice on a block device ------------------------------------------------

TEST_CASE("a loop device is taken exclusively", "[device][loop]") {
  if (::access("/dev/loop-control", F_OK) != 0) {
    WARN("SKIP: /dev/loop-control is absent, no loop device test");
    return;
  }
  constexpr std::uint64_t kSize = 8 << 20;
  TempImage img(kSize);
  LoopDevice loop(img.path());
  if (!loop.attached()) {
    WARN("SKIP: losetup -f --show failed: " << loop.output());
    return;
  }
  INFO("loop device " << loop.path());

  auto dev = must_open(loop.path());
  CHECK(dev->size_bytes() == kSize);
  CHECK(dev->describe() == loop.path());

  const std::string busy = loop.path() + ": device is busy (mounted or in use)";
  CHECK(open_error(loop.path()) == busy);
  CHECK(open_error(loop.path(), {.read_only = true, .exclusive = true}) == busy);
  CHECK(must_open(loop.path(), {.read_only = true, .exclusive = false}) != nullptr);

  const AlignedBuffer data = pattern_buffer(4 * kBlock, 12);
  REQUIRE(dev->write(1 << 20, data.data(), 4 * kBlock) == 0);
  REQUIRE(dev->flush() == 0);
  AlignedBuffer back(4 * kBlock);
  REQUIRE(dev->read(1 << 20, back.data(), 4 * kBlock) == 0);
  CHECK(same(back.data(), data.data(), 4 * kBlock));
  const auto raw = read_file(img.path(), 1 << 20, 4 * kBlock);
  REQUIRE(raw.size() == 4 * kBlock);
  CHECK(same(raw.data(), data.data(), 4 * kBlock));

  dev.reset();
  CHECK(must_open(loop.path()) != nullptr);
}

// An image reached through two loop devices and as the file itself: one
// exclusive opener on any of the three paths shuts out the others (two
// daemons, or mkfs.dhfs and a daemon, on one image each wrote their own
// metadata over the other's).
TEST_CASE("the other paths to the same image are claimed too", "[device][loop]") {
  if (::access("/dev/loop-control", F_OK) != 0) {
    WARN("SKIP: /dev/loop-control is absent, no loop device test");
    return;
  }
  TempImage img(8 << 20);
  LoopDevice a(img.path()), b(img.path());
  if (!a.attached() || !b.attached()) {
    WARN("SKIP: losetup -f --show failed: " << a.output() << " " << b.output());
    return;
  }
  INFO("loop devices " << a.path() << " and " << b.path() << " over " << img.path());
  const auto others = [](const std::string& path) {
    const std::vector<std::string> v = other_paths_to(path);
    return std::set<std::string>(v.begin(), v.end());
  };
  CHECK(std::set<std::string>{a.path(), b.path()} == others(img.path()));
  CHECK(std::set<std::string>{img.path(), b.path()} == others(a.path()));
  TempImage plain(16 * kBlock);
  CHECK(other_paths_to(plain.path()).empty());

  SECTION("through a loop device") {
    auto dev = must_open(a.path());
    CHECK(open_error(img.path()) == img.path() + ": in use by another dhfs or fsck.dhfs");
    CHECK(open_error(b.path()) == b.path() + ": device is busy (mounted or in use)");
    // A non-exclusive opener (a reader such as fsck.dhfs -n would be) is not stopped.
    CHECK(must_open(img.path(), {.read_only = true, .exclusive = false}) != nullptr);
    dev.reset();
    CHECK(must_open(img.path()) != nullptr);
    CHECK(must_open(b.path()) != nullptr);
  }
  SECTION("the backing file locked by someone else") {
    // As a daemon that uses the file directly and started before the loop
    // devices were attached holds it.
    UniqueFd other(::open(img.path().c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(::flock(other.get(), LOCK_EX | LOCK_NB) == 0);
    CHECK(open_error(a.path()) == a.path() + ": " + img.path() +
                                      " (the same storage) is in use by another dhfs or fsck.dhfs");
    other.reset();
    CHECK(must_open(a.path()) != nullptr);
  }
  SECTION("as the file") {
    // (The file's opener holds both loop devices O_EXCL: their own open
    // fails first.)
    auto dev = must_open(img.path());
    CHECK(open_error(a.path()) == a.path() + ": device is busy (mounted or in use)");
    CHECK(open_error(b.path()) == b.path() + ": device is busy (mounted or in use)");
    dev.reset();
    CHECK(must_open(a.path()) != nullptr);
  }
}

}  // namespace dhfs

namespace dhfs {
namespace {

// The bracketed word of a /sys/kernel/mm/transparent_hugepage setting.
std::string thp_setting(const char* name) {
  std::FILE* f = std::fopen((std::string("/sys/kernel/mm/transparent_hugepage/") + name).c_str(), "r");
  if (!f) return {};
  char line[256] = {};
  const bool got = std::fgets(line, sizeof line, f) != nullptr;
  std::fclose(f);
  if (!got) return {};
  const std::string s(line);
  const auto open = s.find('['), close = s.find(']');
  return open == std::string::npos || close == std::string::npos ? std::string() : s.substr(open + 1, close - open - 1);
}

// AnonHugePages (KiB) of the mapping of this process that holds `p`, -1 if not found.
long anon_huge_kib_at(const void* p) {
  std::FILE* f = std::fopen("/proc/self/smaps", "r");
  if (!f) return -1;
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  char line[512];
  bool inside = false;
  long kib = -1;
  while (std::fgets(line, sizeof line, f)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && std::strchr(line, ':') > std::strchr(line, ' ')) {
      inside = lo <= at && at < hi;
      continue;
    }
    if (inside && std::sscanf(line, "AnonHugePages: %ld kB", &kib) == 1) break;
  }
  std::fclose(f);
  return inside ? kib : -1;
}

}  // namespace

TEST_CASE("huge-page buffers are 2 MiB-aligned, usable, and in huge pages where the kernel grants them at fault",
          "[device]") {
  // Heap memory faulted in as 4 KiB pages and freed, as other tests (or a
  // mount that loaded a large image) leave it: glibc raises its mmap
  // threshold when a large mapped block is freed, and serves the next
  // large blocks from such heap memory. The buffer must not be made of it.
  for (std::size_t mib : {8, 6}) {
    void* p = std::malloc(mib << 20);
    REQUIRE(p != nullptr);
    std::memset(p, 1, mib << 20);
    std::free(p);
  }
  AlignedBuffer b = AlignedBuffer::huge_pages(3 << 20);
  REQUIRE(b.size() == (3u << 20));
  CHECK(reinterpret_cast<std::uintptr_t>(b.data()) % (2 << 20) == 0);
  std::memset(b.data(), 0x5a, b.size());
  CHECK(std::all_of(b.data(), b.data() + b.size(), [](std::byte x) { return x == std::byte{0x5a}; }));
  CHECK(AlignedBuffer::huge_pages(0).data() == nullptr);
  // With THP for madvised memory and a defrag setting that compacts for it
  // at fault, the touched buffer lies in huge pages (the setting tells why
  // not, otherwise).
  const std::string enabled = thp_setting("enabled"), defrag = thp_setting("defrag");
  INFO("transparent_hugepage: enabled [" << enabled << "], defrag [" << defrag << "]");
  if ((enabled == "always" || enabled == "madvise") &&
      (defrag == "always" || defrag == "madvise" || defrag == "defer+madvise"))
    CHECK(anon_huge_kib_at(b.data()) >= 2048);
}

}  // namespace dhfs
