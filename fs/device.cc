#include "fs/device.h"

#include <fcntl.h>
#include <linux/fs.h>  // BLKGETSIZE64, BLKDISCARD
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <system_error>
#include <utility>
#include <vector>

#include "fs/log.h"
#include "fs/storage_paths.h"
#include "fs/unique_fd.h"
#include "fs/uring.h"
#include "fs/writeback_starter.h"

namespace dhfs {
namespace {

constexpr std::uint64_t kBlock = 4096;
// See WritebackStarter: 256 KiB did no better on the bench VM.
constexpr std::uint64_t kWritebackEveryBytes = 1 << 20;

bool block_aligned(std::uint64_t v) { return v % kBlock == 0; }

std::string errno_text(int err) { return std::generic_category().message(err); }

// ---- request validation --------------------------------------------------

// The rules every Device enforces on one I/O. Returns 0 or the negative
// errno submit() reports: -EROFS for a write to a read-only device, -EINVAL
// for misalignment, -EIO for a range outside the device.
int check_io(const DeviceIo& io, std::uint64_t size, bool read_only, bool need_aligned_buf) {
  if (io.op == DeviceIo::Op::Write && read_only) return -EROFS;
  if (!block_aligned(io.offset) || !block_aligned(io.len)) return -EINVAL;
  if (io.len > 0 && io.buf == nullptr) return -EINVAL;
  if (need_aligned_buf && !block_aligned(reinterpret_cast<std::uintptr_t>(io.buf))) {
    return -EINVAL;
  }
  // Written so that offset + len cannot overflow.
  if (io.offset > size || io.len > size - io.offset) return -EIO;
  return 0;
}

// Checks the whole batch before any of it runs, so that a bad request never
// leaves a batch half applied.
int check_batch(std::span<const DeviceIo> ios, std::uint64_t size, bool read_only,
                bool need_aligned_buf) {
  for (const DeviceIo& io : ios) {
    if (const int r = check_io(io, size, read_only, need_aligned_buf); r < 0) return r;
  }
  return 0;
}

// ---- AlignedBuffer storage -----------------------------------------------

std::byte* alloc_aligned(std::size_t size) {
  if (size == 0) return nullptr;
  void* p = nullptr;
  if (::posix_memalign(&p, kBlock, size) != 0) throw std::bad_alloc();
  return static_cast<std::byte*>(p);
}

std::byte* alloc_zeroed(std::size_t size) {
  std::byte* p = alloc_aligned(size);
  if (p) std::memset(p, 0, size);
  return p;
}

// ---- FileDevice ------------------------------------------------------------

int medium_size(int fd, const struct stat& st, std::uint64_t& size);

// A block device or image file, read and written through the calling
// thread's io_uring (see fs/uring.h).
class FileDevice final : public Device {
 public:
  FileDevice(std::string path, UniqueFd fd, UniqueFd cached_fd, std::uint64_t size, bool read_only, bool direct,
             bool image_file, OtherPathsClaim other_paths)
      : path_(std::move(path)),
        fd_(std::move(fd)),
        cached_fd_(std::move(cached_fd)),
        size_(size),
        read_only_(read_only),
        direct_(direct),
        image_file_(image_file),
        other_paths_(std::move(other_paths)) {}

  int submit(std::span<const DeviceIo> ios) override {
    const int r = run_batch(ios);
    if (r < 0) report_failed_batch(ios, r);
    return r;
  }

  // fdatasync works on the file, not the descriptor: it also writes back
  // what went through cached_fd_. On a block device it sends a cache FLUSH
  // to the disk as well.
  int flush() override {
    if (::fdatasync(fd_.get()) == 0) return 0;
    const int err = errno;
    if (std::uint64_t held_back = 0; failures_logged_.allow(held_back))
      log::error("{}: flush (fdatasync) failed: {}{}", path_, errno_text(err), held_back_text(held_back));
    return -err;
  }

  int discard(std::uint64_t offset, std::uint64_t len) override {
    if (read_only_) return -EROFS;
    const std::uint64_t size = size_.load();
    if (!block_aligned(offset) || !block_aligned(len) || offset > size || len > size - offset) return -EINVAL;
    if (image_file_)
      return ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                         static_cast<off_t>(len)) == 0
                 ? 0
                 : -errno;
    std::uint64_t range[2] = {offset, len};
    return ::ioctl(fd_.get(), BLKDISCARD, range) == 0 ? 0 : -errno;
  }

  int preallocate(std::uint64_t offset, std::uint64_t len) override {
    if (!image_file_ || read_only_) return 0;
    return ::fallocate(fd_.get(), 0, static_cast<off_t>(offset), static_cast<off_t>(len)) == 0 ? 0 : -errno;
  }

  std::uint64_t size_bytes() const override { return size_.load(); }
  bool read_only() const override { return read_only_; }
  std::string describe() const override { return path_; }

  int extend(std::uint64_t bytes) override {
    if (read_only_) return -EROFS;
    std::lock_guard lk(extend_mu_);
    struct stat st{};
    std::uint64_t now = 0;
    if (::fstat(fd_.get(), &st) != 0) return -errno;
    if (const int rc = medium_size(fd_.get(), st, now); rc) return rc;
    if (image_file_ && bytes > now) {
      if (::ftruncate(fd_.get(), static_cast<off_t>(bytes)) != 0) return -errno;
      now = bytes;
    }
    // The size only ever grows here: I/O checked against the old size
    // meanwhile stays valid.
    if (now > size_.load()) size_ = now;
    return now < bytes ? -EFBIG : 0;
  }

 private:
  int run_batch(std::span<const DeviceIo> ios) {
    // Buffer alignment only matters to the kernel with O_DIRECT; without it
    // (tmpfs) any buffer works.
    if (const int r = check_batch(ios, size_.load(), read_only_, direct_); r < 0) return r;
    if (!cached_fd_ || std::none_of(ios.begin(), ios.end(), [](const DeviceIo& io) { return io.cached; }))
      return run_io(fd_.get(), ios);
    thread_local std::vector<DeviceIo> direct_ios;
    direct_ios.clear();
    for (const DeviceIo& io : ios) {
      if (!io.cached) {
        direct_ios.push_back(io);
        continue;
      }
      // A copy into or out of the page cache: no ring needed.
      for (std::uint32_t done = 0; done < io.len;) {
        const auto at = static_cast<off_t>(io.offset + done);
        std::byte* buf = static_cast<std::byte*>(io.buf) + done;
        const ssize_t n = io.op == DeviceIo::Op::Write ? ::pwrite(cached_fd_.get(), buf, io.len - done, at)
                                                       : ::pread(cached_fd_.get(), buf, io.len - done, at);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        if (n == 0) return -EIO;
        done += static_cast<std::uint32_t>(n);
      }
      if (io.op == DeviceIo::Op::Write) writeback_.wrote(io.len);
    }
    return direct_ios.empty() ? 0 : run_io(fd_.get(), direct_ios);
  }

  // The application sees only EIO or ENOSPC; the log says which medium
  // failed, where and why (at most once a second, see failures_logged_).
  void report_failed_batch(std::span<const DeviceIo> ios, int err) {
    std::uint64_t held_back = 0;
    if (ios.empty() || !failures_logged_.allow(held_back)) return;
    bool reads = false, writes = false;
    std::uint64_t blocks = 0, first = UINT64_MAX;
    for (const DeviceIo& io : ios) {
      (io.op == DeviceIo::Op::Write ? writes : reads) = true;
      blocks += io.len / kBlock;
      first = std::min(first, io.offset / kBlock);
    }
    log::error("{}: {} of {} block{} from block {} failed: {}{}", path_,
               reads && writes ? "read and write" : writes ? "write" : "read", blocks, blocks == 1 ? "" : "s",
               first, errno_text(-err), held_back_text(held_back));
  }

  static std::string held_back_text(std::uint64_t n) {
    return n == 0 ? std::string() : " (" + std::to_string(n) + " more failures since the last message)";
  }

  const std::string path_;
  const UniqueFd fd_;
  const UniqueFd cached_fd_;  // the same medium without O_DIRECT (invalid if fd_ is not direct)
  std::atomic<std::uint64_t> size_;  // grows with extend(), never shrinks
  std::mutex extend_mu_;
  const bool read_only_;
  const bool direct_;  // opened O_DIRECT: buffers must be 4 KiB aligned
  const bool image_file_;  // a regular file: space can be preallocated
  log::Throttle failures_logged_{std::chrono::seconds(1)};
  OtherPathsClaim other_paths_;  // held while the device is open
  // Starts writing back what went through cached_fd_ once per MiB (the
  // whole medium: pages written earlier and still dirty go too). Its
  // errors are not lost: the kernel keeps them for flush()'s fdatasync.
  WritebackStarter writeback_{[this] { ::sync_file_range(cached_fd_.get(), 0, 0, SYNC_FILE_RANGE_WRITE); },
                              kWritebackEveryBytes};
};

// ---- open_device helpers -----------------------------------------------

bool is_medium(const struct stat& st) { return S_ISBLK(st.st_mode) || S_ISREG(st.st_mode); }

// Opens with O_DIRECT so that device data is not cached a second time below
// the page cache FUSE already has. Filesystems without direct I/O (tmpfs)
// refuse it with EINVAL; those are opened buffered and `direct` says so.
// On failure returns an invalid fd with errno set.
UniqueFd open_medium(const std::string& path, bool block, const DeviceOpenOptions& opts,
                     bool& direct) {
  int flags = (opts.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  // On a block device O_EXCL (without O_CREAT) claims the device: it fails
  // with EBUSY if the device is mounted or held O_EXCL by anyone else.
  if (block && opts.exclusive) flags |= O_EXCL;
  direct = true;
  UniqueFd fd(::open(path.c_str(), flags | O_DIRECT));
  if (!fd && errno == EINVAL) {
    direct = false;
    fd.reset(::open(path.c_str(), flags));
  }
  return fd;
}

// Size in bytes of the medium behind `fd`, rounded down to whole blocks.
// Returns 0 or a negative errno.
int medium_size(int fd, const struct stat& st, std::uint64_t& size) {
  if (S_ISBLK(st.st_mode)) {
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0) return -errno;
  } else {
    size = static_cast<std::uint64_t>(st.st_size);
  }
  size -= size % kBlock;
  return 0;
}

std::unique_ptr<Device> fail(std::string& error, const std::string& path, const std::string& why) {
  error = path + ": " + why;
  return nullptr;
}

}  // namespace

// ---- AlignedBuffer ---------------------------------------------------------

AlignedBuffer::AlignedBuffer(std::size_t size) : data_(alloc_zeroed(size)), size_(size) {}

AlignedBuffer AlignedBuffer::uninitialized(std::size_t size) {
  AlignedBuffer b;
  b.data_ = alloc_aligned(size);
  b.size_ = size;
  return b;
}

AlignedBuffer AlignedBuffer::huge_pages(std::size_t size) {
  constexpr std::size_t kHugePage = 2 << 20;
  AlignedBuffer b;
  if (size == 0) return b;
  const std::size_t whole = (size + kHugePage - 1) / kHugePage * kHugePage;
  // One huge page more than needed, then the ends cut off: a 2 MiB-aligned
  // mapping of `whole` bytes.
  void* p = ::mmap(nullptr, whole + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t start = (at + kHugePage - 1) / kHugePage * kHugePage;
  if (start > at) ::munmap(p, start - at);
  if (const std::size_t tail = at + whole + kHugePage - (start + whole); tail > 0)
    ::munmap(reinterpret_cast<void*>(start + whole), tail);
  // Advice only: where the kernel has no huge pages for it, 4 KiB pages
  // serve the same.
  ::madvise(reinterpret_cast<void*>(start), whole, MADV_HUGEPAGE);
  b.data_ = reinterpret_cast<std::byte*>(start);
  b.size_ = size;
  b.mapped_ = whole;
  return b;
}

void AlignedBuffer::release() {
  if (mapped_)
    ::munmap(data_, mapped_);
  else
    std::free(data_);
  data_ = nullptr;
  size_ = mapped_ = 0;
}

AlignedBuffer::AlignedBuffer(AlignedBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), mapped_(std::exchange(o.mapped_, 0)) {}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    mapped_ = std::exchange(o.mapped_, 0);
  }
  return *this;
}

AlignedBuffer::~AlignedBuffer() { release(); }

void AlignedBuffer::ensure(std::size_t size) {
  if (size <= size_) return;
  *this = AlignedBuffer(size);
}

// ---- ScratchBuffer ---------------------------------------------------------

namespace {
std::vector<AlignedBuffer>& scratch_pool() {
  thread_local std::vector<AlignedBuffer> pool;
  return pool;
}
}  // namespace

ScratchBuffer::ScratchBuffer(std::size_t size) : size_(size) {
  auto& pool = scratch_pool();
  if (!pool.empty()) {
    buf_ = std::move(pool.back());
    pool.pop_back();
  }
  buf_.ensure(size);
}

ScratchBuffer::~ScratchBuffer() {
  auto& pool = scratch_pool();
  if (buf_.size() <= kKeptBytes && pool.size() < kKept) pool.push_back(std::move(buf_));
}

// ---- Device ----------------------------------------------------------------

int Device::read(std::uint64_t offset, void* buf, std::uint32_t len) {
  const DeviceIo io{DeviceIo::Op::Read, offset, buf, len};
  return submit({&io, 1});
}

int Device::write(std::uint64_t offset, const void* buf, std::uint32_t len) {
  // DeviceIo has one buffer pointer for both directions; a write only reads it.
  const DeviceIo io{DeviceIo::Op::Write, offset, const_cast<void*>(buf), len};
  return submit({&io, 1});
}

// ---- open_device -----------------------------------------------------------

std::unique_ptr<Device> open_device(const std::string& path, const DeviceOpenOptions& opts,
                                    std::string& error) {
  struct stat st {};
  // Check the type before open(): opening a FIFO would block, and a
  // directory or socket is never a medium.
  if (::stat(path.c_str(), &st) != 0) return fail(error, path, errno_text(errno));
  if (!is_medium(st)) return fail(error, path, "not a block device or regular file");
  const bool block = S_ISBLK(st.st_mode);

  bool direct = false;
  UniqueFd fd = open_medium(path, block, opts, direct);
  if (!fd) {
    const int err = errno;
    if (err == EBUSY && block && opts.exclusive) {
      return fail(error, path, "device is busy (mounted or in use)");
    }
    return fail(error, path, errno_text(err));
  }

  // The path may have changed between stat() and open(); from here on only
  // what the descriptor refers to counts.
  if (::fstat(fd.get(), &st) != 0) return fail(error, path, errno_text(errno));
  if (!is_medium(st)) return fail(error, path, "not a block device or regular file");

  // O_EXCL means nothing for image files; this advisory lock is what
  // refuses a second dhfs or fsck.dhfs there (on block devices O_EXCL has
  // already done so). It goes away with the descriptor.
  if (opts.exclusive && ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) return fail(error, path, "in use by another dhfs or fsck.dhfs");
    return fail(error, path, errno_text(err));
  }
  // The same bytes reached another way (a loop device over the image, the
  // file behind a loop device) are claimed as well.
  OtherPathsClaim other_paths;
  if (opts.exclusive && !other_paths.take(path, fd.get(), st, error)) return nullptr;

  std::uint64_t size = 0;
  if (const int r = medium_size(fd.get(), st, size); r < 0) {
    return fail(error, path, "cannot read size: " + errno_text(-r));
  }
  // The path could name something else by now; the descriptor's own
  // /proc link cannot.
  UniqueFd cached_fd;
  if (direct && !opts.read_only)
    cached_fd.reset(::open(("/proc/self/fd/" + std::to_string(fd.get())).c_str(), O_RDWR | O_CLOEXEC));
  return std::make_unique<FileDevice>(path, std::move(fd), std::move(cached_fd), size, opts.read_only, direct,
                                      S_ISREG(st.st_mode), std::move(other_paths));
}

// ---- MemDevice -------------------------------------------------------------

MemDevice::MemDevice(std::uint64_t size_bytes) : bytes_(size_bytes), size_(size_bytes) {}

int MemDevice::extend(std::uint64_t bytes) {
  std::lock_guard lock(mu_);
  if (bytes > bytes_.size()) {
    bytes_.resize(bytes);
    size_ = bytes;
  }
  return 0;
}

int MemDevice::submit(std::span<const DeviceIo> ios) {
  std::lock_guard lock(mu_);
  // Buffers are held to the O_DIRECT rule here too, so that code tested
  // against memory does not fail later on a real device.
  if (const int r = check_batch(ios, bytes_.size(), read_only(), true); r < 0) return r;
  for (const DeviceIo& io : ios) {
    if (io.len == 0) continue;  // memcpy must not see a null buffer
    std::byte* medium = bytes_.data() + io.offset;
    if (io.op == DeviceIo::Op::Read) {
      std::memcpy(io.buf, medium, io.len);
    } else {
      std::memcpy(medium, io.buf, io.len);
    }
  }
  return 0;
}

int MemDevice::flush() { return 0; }

int MemDevice::discard(std::uint64_t offset, std::uint64_t len) {
  std::lock_guard lk(mu_);
  if (offset % kBlock || len % kBlock || offset > bytes_.size() || len > bytes_.size() - offset) return -EINVAL;
  std::fill_n(bytes_.begin() + static_cast<std::ptrdiff_t>(offset), len, std::byte{0xD5});
  return 0;
}

}  // namespace dhfs
