// Data path: fallocate, SEEK_DATA/SEEK_HOLE, files beyond 4 GiB, st_blocks,
// copy_file_range, fsync family, mmap, O_DIRECT, unlinked open files.
#include <sys/mman.h>
#include <sys/statvfs.h>

#include <chrono>
#include <memory>

#include "fixture.h"

using namespace dhfs_test;

namespace {

constexpr off_t kKiB = 1024;
constexpr off_t kMiB = 1024 * 1024;
constexpr off_t kGiB = 1024 * 1024 * 1024;

off_t seek(int fd, off_t off, int whence) {
  errno = 0;
  off_t r = ::lseek(fd, off, whence);
  int e = errno;
  INFO("lseek(" << off << ", " << (whence == SEEK_DATA ? "SEEK_DATA" : whence == SEEK_HOLE ? "SEEK_HOLE" : "other")
                << ") -> " << r << " (" << errname(r < 0 ? e : 0) << ")");
  REQUIRE(r >= 0);
  return r;
}

std::string zeros(size_t n) { return std::string(n, '\0'); }

uint64_t free_bytes(const std::string& path) {
  struct statvfs sv {};
  SYS(::statvfs(path.c_str(), &sv));
  return uint64_t(sv.f_bfree) * sv.f_frsize;
}

struct AlignedFree {
  void operator()(char* p) const { std::free(p); }
};
std::unique_ptr<char, AlignedFree> aligned(size_t n) {
  void* p = nullptr;
  REQUIRE(::posix_memalign(&p, 4096, n) == 0);
  return std::unique_ptr<char, AlignedFree>(static_cast<char*>(p));
}

// copy_file_range until len bytes are copied; REQUIREs progress.
void copy_range(int in, off_t off_in, int out, off_t off_out, size_t len) {
  loff_t i = off_in, o = off_out;
  while (len > 0) {
    errno = 0;
    ssize_t n = ::copy_file_range(in, &i, out, &o, len, 0);
    int e = errno;
    INFO("copy_file_range at " << i << " -> " << o << ": " << n << " (" << errname(n < 0 ? e : 0) << ")");
    REQUIRE(n > 0);
    len -= size_t(n);
  }
}

}  // namespace

TEST_CASE("fallocate allocates with and without KEEP_SIZE", "[fallocate]") {
  MountedFs fs;
  {
    Fd fd = open_fd(fs.path("a"), O_RDWR | O_CREAT, 0644);
    SYS(::fallocate(fd, 0, 0, kMiB));
    struct stat st = fstat_of(fd);
    CHECK(st.st_size == kMiB);
    CHECK(st.st_blocks >= kMiB / 512);
    CHECK_BYTES(pread_all(fd, size_t(kMiB), 0), zeros(size_t(kMiB)));
    // Beyond the end, leaving a gap.
    SYS(::fallocate(fd, 0, 4 * kMiB, 64 * kKiB));
    CHECK(fstat_of(fd).st_size == 4 * kMiB + 64 * kKiB);
    CHECK_BYTES(pread_all(fd, size_t(kMiB), 2 * kMiB), zeros(size_t(kMiB)));
    // Over existing data: the data stays.
    const std::string data = random_bytes(8192, 21);
    pwrite_all(fd, data, 100);
    SYS(::fallocate(fd, 0, 0, kMiB));
    CHECK_BYTES(pread_all(fd, data.size(), 100), data);
    CHECK(fstat_of(fd).st_size == 4 * kMiB + 64 * kKiB);
    // Shrinking is not fallocate's business.
    SYS(::fallocate(fd, 0, 0, 4096));
    CHECK(fstat_of(fd).st_size == 4 * kMiB + 64 * kKiB);
  }
  {
    Fd fd = open_fd(fs.path("b"), O_RDWR | O_CREAT, 0644);
    SYS(::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, kMiB));
    struct stat st = fstat_of(fd);
    CHECK(st.st_size == 0);
    CHECK(st.st_blocks >= kMiB / 512);  // preallocated space is counted
    CHECK(pread_all(fd, 100, 0).empty());
    pwrite_all(fd, "hello", 0);
    CHECK(fstat_of(fd).st_size == 5);
    CHECK_BYTES(pread_all(fd, 100, 0), "hello");
    // On an existing file, past its end.
    pwrite_all(fd, std::string(4096, 'x'), 0);
    SYS(::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 2 * kMiB));
    CHECK(fstat_of(fd).st_size == 4096);
    CHECK_BYTES(pread_all(fd, 8192, 0), std::string(4096, 'x'));
    // Extending over preallocated space reads zeros.
    SYS(::ftruncate(fd, kMiB));
    CHECK_BYTES(pread_all(fd, 8192, 4096), zeros(8192));
  }
}

TEST_CASE("fallocate PUNCH_HOLE zeroes a range and frees its blocks", "[fallocate]") {
  MountedFs fs;
  Fd fd = open_fd(fs.path("p"), O_RDWR | O_CREAT, 0644);
  std::string data = random_bytes(size_t(kMiB), 31);
  pwrite_all(fd, data, 0);
  SYS(::fsync(fd));
  const struct stat before = fstat_of(fd);
  CHECK(before.st_blocks >= kMiB / 512);

  // Aligned punch in the middle.
  SYS(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 256 * kKiB, 512 * kKiB));
  data.replace(size_t(256 * kKiB), size_t(512 * kKiB), zeros(size_t(512 * kKiB)));
  CHECK(fstat_of(fd).st_size == kMiB);
  CHECK_BYTES(pread_all(fd, size_t(kMiB), 0), data);
  SYS(::fsync(fd));
  struct stat after = fstat_of(fd);
  INFO("st_blocks before " << before.st_blocks << ", after " << after.st_blocks);
  CHECK(after.st_blocks <= before.st_blocks - 512 * kKiB / 512);
  CHECK(seek(fd, 0, SEEK_HOLE) == 256 * kKiB);
  CHECK(seek(fd, 256 * kKiB, SEEK_DATA) == 768 * kKiB);

  // Unaligned punch: partial blocks are zeroed, neighbours untouched.
  SYS(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1000, 4000));
  data.replace(1000, 4000, zeros(4000));
  SYS(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 900 * kKiB + 1, 10000));
  data.replace(size_t(900 * kKiB + 1), 10000, zeros(10000));
  CHECK_BYTES(pread_all(fd, size_t(kMiB), 0), data);

  // Past the end: nothing changes, the size stays.
  SYS(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * kMiB, kMiB));
  CHECK(fstat_of(fd).st_size == kMiB);

  // PUNCH_HOLE must come with KEEP_SIZE.
  CHECK_ERRNO(::fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096), EOPNOTSUPP);

  // The whole file.
  SYS(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, kMiB));
  SYS(::fsync(fd));
  CHECK_BYTES(pread_all(fd, size_t(kMiB), 0), zeros(size_t(kMiB)));
  CHECK(fstat_of(fd).st_blocks <= 16);
  CHECK(fstat_of(fd).st_size == kMiB);
  fd.close_checked();
  CHECK_BYTES(read_file(fs.path("p")), zeros(size_t(kMiB)));
}

TEST_CASE("lseek SEEK_DATA and SEEK_HOLE on a sparse file", "[seek]") {
  MountedFs fs;
  Fd fd = open_fd(fs.path("sparse"), O_RDWR | O_CREAT, 0644);
  const std::string a = random_bytes(size_t(64 * kKiB), 41);
  const std::string b = random_bytes(size_t(64 * kKiB), 42);
  pwrite_all(fd, a, 0);
  pwrite_all(fd, b, kMiB);
  SYS(::ftruncate(fd, 2 * kMiB));
  SYS(::fsync(fd));

  CHECK(seek(fd, 0, SEEK_DATA) == 0);
  CHECK(seek(fd, 0, SEEK_HOLE) == 64 * kKiB);
  CHECK(seek(fd, 100, SEEK_HOLE) == 64 * kKiB);
  CHECK(seek(fd, 64 * kKiB, SEEK_DATA) == kMiB);
  CHECK(seek(fd, 100 * kKiB, SEEK_DATA) == kMiB);
  CHECK(seek(fd, 100 * kKiB, SEEK_HOLE) == 100 * kKiB);
  CHECK(seek(fd, kMiB, SEEK_HOLE) == kMiB + 64 * kKiB);
  CHECK(seek(fd, kMiB + 5, SEEK_DATA) == kMiB + 5);
  CHECK(seek(fd, 3 * kMiB / 2, SEEK_HOLE) == 3 * kMiB / 2);
  CHECK_ERRNO(::lseek(fd, kMiB + 64 * kKiB, SEEK_DATA), ENXIO);
  CHECK_ERRNO(::lseek(fd, 2 * kMiB, SEEK_DATA), ENXIO);
  CHECK_ERRNO(::lseek(fd, 2 * kMiB, SEEK_HOLE), ENXIO);
  CHECK_ERRNO(::lseek(fd, 3 * kMiB, SEEK_HOLE), ENXIO);
  // The file offset is where the last seek put it.
  CHECK(seek(fd, 64 * kKiB, SEEK_DATA) == kMiB);
  CHECK(seek(fd, 0, SEEK_CUR) == kMiB);
  CHECK_BYTES(pread_all(fd, a.size(), 0), a);
  CHECK_BYTES(pread_all(fd, b.size(), kMiB), b);

  // Only a hole.
  Fd h = open_fd(fs.path("hole"), O_RDWR | O_CREAT, 0644);
  SYS(::ftruncate(h, kMiB));
  CHECK_ERRNO(::lseek(h, 0, SEEK_DATA), ENXIO);
  CHECK(seek(h, 0, SEEK_HOLE) == 0);
  // Dense: the only hole is the implicit one at the end.
  Fd d = open_fd(fs.path("dense"), O_RDWR | O_CREAT, 0644);
  pwrite_all(d, random_bytes(size_t(200 * kKiB), 43), 0);
  SYS(::fsync(d));
  CHECK(seek(d, 0, SEEK_DATA) == 0);
  CHECK(seek(d, 0, SEEK_HOLE) == 200 * kKiB);
  CHECK(seek(d, 4096, SEEK_HOLE) == 200 * kKiB);
}

TEST_CASE("files beyond 4 GiB", "[large]") {
  MountedFs fs;
  Fd fd = open_fd(fs.path("big"), O_RDWR | O_CREAT, 0644);
  const std::string data = random_bytes(size_t(kMiB), 51);
  const std::string cross = random_bytes(8192, 52);
  pwrite_all(fd, data, 5 * kGiB);
  pwrite_all(fd, cross, 4 * kGiB - 4096);  // straddles the 32-bit boundary
  SYS(::fsync(fd));

  struct stat st = fstat_of(fd);
  CHECK(st.st_size == 5 * kGiB + kMiB);
  INFO("st_blocks " << st.st_blocks);
  CHECK(st.st_blocks * 512 >= kMiB + 8192);
  CHECK(st.st_blocks * 512 <= kMiB + 8192 + 256 * kKiB);
  CHECK_BYTES(pread_all(fd, data.size(), 5 * kGiB), data);
  CHECK_BYTES(pread_all(fd, cross.size(), 4 * kGiB - 4096), cross);
  // Nothing wrapped around at 4 GiB.
  CHECK_BYTES(pread_all(fd, size_t(kMiB), kGiB), zeros(size_t(kMiB)));
  CHECK_BYTES(pread_all(fd, size_t(64 * kKiB), 0), zeros(size_t(64 * kKiB)));
  CHECK_BYTES(pread_all(fd, size_t(64 * kKiB), 4 * kGiB + 4096), zeros(size_t(64 * kKiB)));
  CHECK_BYTES(pread_all(fd, size_t(64 * kKiB), 9 * kGiB / 2), zeros(size_t(64 * kKiB)));
  CHECK(pread_all(fd, 10, 5 * kGiB + kMiB).empty());
  CHECK(seek(fd, 0, SEEK_END) == 5 * kGiB + kMiB);
  CHECK(seek(fd, 0, SEEK_DATA) == 4 * kGiB - 4096);
  CHECK(seek(fd, 4 * kGiB - 4096, SEEK_HOLE) == 4 * kGiB + 4096);
  CHECK(seek(fd, 4 * kGiB + 4096, SEEK_DATA) == 5 * kGiB);

  // Truncate inside the far extent.
  SYS(::ftruncate(fd, 5 * kGiB + 100));
  CHECK(fstat_of(fd).st_size == 5 * kGiB + 100);
  CHECK_BYTES(pread_all(fd, 200, 5 * kGiB), data.substr(0, 100));
  fd.close_checked();
  CHECK(stat_of(fs.path("big")).st_size == 5 * kGiB + 100);
}

TEST_CASE("a file ending at 1 TiB", "[large]") {
  MountedFs fs;
  Fd fd = open_fd(fs.path("huge"), O_RDWR | O_CREAT, 0644);
  const std::string data = random_bytes(4096, 53);
  const off_t tib = off_t(1) << 40;
  pwrite_all(fd, data, tib - 4096);
  SYS(::fsync(fd));
  struct stat st = fstat_of(fd);
  CHECK(st.st_size == tib);
  CHECK(st.st_blocks * 512 <= 256 * kKiB);
  CHECK_BYTES(pread_all(fd, 8192, tib - 8192), zeros(4096) + data);
  CHECK(seek(fd, 0, SEEK_DATA) == tib - 4096);
}

TEST_CASE("st_blocks is honest for dense and sparse files", "[blocks]") {
  MountedFs fs;
  Fd fd = open_fd(fs.path("f"), O_RDWR | O_CREAT, 0644);
  CHECK(fstat_of(fd).st_blocks == 0);

  pwrite_all(fd, std::string(100, 's'), 0);
  SYS(::fsync(fd));
  CHECK(fstat_of(fd).st_blocks <= 8);

  Fd dense = open_fd(fs.path("dense"), O_RDWR | O_CREAT, 0644);
  pwrite_all(dense, random_bytes(size_t(kMiB), 61), 0);
  SYS(::fsync(dense));
  struct stat st = fstat_of(dense);
  INFO("dense st_blocks " << st.st_blocks);
  CHECK(st.st_blocks >= kMiB / 512);
  CHECK(st.st_blocks <= kMiB / 512 + 64);

  Fd sparse = open_fd(fs.path("sparse"), O_RDWR | O_CREAT, 0644);
  SYS(::ftruncate(sparse, kGiB));
  SYS(::fsync(sparse));
  CHECK(fstat_of(sparse).st_blocks == 0);
  pwrite_all(sparse, random_bytes(4096, 62), 512 * kMiB);
  SYS(::fsync(sparse));
  st = fstat_of(sparse);
  INFO("sparse st_blocks " << st.st_blocks);
  CHECK(st.st_blocks >= 8);
  CHECK(st.st_blocks <= 8 + 64);
  pwrite_all(sparse, random_bytes(4096, 63), 0);
  SYS(::fsync(sparse));
  const blkcnt_t two = fstat_of(sparse).st_blocks;
  CHECK(two >= 16);
  CHECK(two <= 16 + 64);
  // Overwriting in place does not grow the file's allocation.
  pwrite_all(sparse, random_bytes(4096, 64), 0);
  SYS(::fsync(sparse));
  CHECK(fstat_of(sparse).st_blocks == two);
  CHECK(fstat_of(sparse).st_size == kGiB);

  SYS(::ftruncate(dense, 0));
  SYS(::fsync(dense));
  CHECK(fstat_of(dense).st_blocks == 0);
}

TEST_CASE("copy_file_range", "[copy_file_range]") {
  MountedFs fs;
  std::string src = random_bytes(size_t(3 * kMiB + 777), 71);
  write_file(fs.path("src"), src);
  Fd in = open_fd(fs.path("src"), O_RDWR);

  // Whole file with the fds' own offsets.
  {
    Fd out = open_fd(fs.path("dst1"), O_WRONLY | O_CREAT, 0644);
    size_t done = 0;
    while (true) {
      ssize_t n = SYS(::copy_file_range(in, nullptr, out, nullptr, 1 << 30, 0));
      if (n == 0) break;
      done += size_t(n);
    }
    CHECK(done == src.size());
    CHECK_SYS(::lseek(in, 0, SEEK_CUR), ==, off_t(src.size()));
    CHECK_SYS(::lseek(out, 0, SEEK_CUR), ==, off_t(src.size()));
  }
  CHECK_BYTES(read_file(fs.path("dst1")), src);

  // Unaligned ranges into the middle of existing data, and past its end.
  std::string dst = random_bytes(size_t(kMiB), 72);
  write_file(fs.path("dst2"), dst);
  {
    Fd out = open_fd(fs.path("dst2"), O_RDWR);
    copy_range(in, 12345, out, 777, 100000);
    dst.replace(777, 100000, src.substr(12345, 100000));
    copy_range(in, 4096, out, 2 * kMiB + 3, 5000);
    dst += zeros(size_t(kMiB + 3)) + src.substr(4096, 5000);
    copy_range(in, 3, out, 4096, 2 * size_t(kMiB));  // aligned destination, unaligned source
    dst.replace(4096, size_t(2 * kMiB), src.substr(3, size_t(2 * kMiB)));
    // At or past the end of the source: nothing to copy.
    loff_t i = loff_t(src.size()), o = 0;
    CHECK_SYS(::copy_file_range(in, &i, out, &o, 100, 0), ==, 0);
  }
  CHECK_BYTES(read_file(fs.path("dst2")), dst);

  // Copies are independent of their source afterwards.
  pwrite_all(in, "CHANGED", 0);
  pwrite_all(in, "CHANGED", 2 * kMiB);
  CHECK_BYTES(read_file(fs.path("dst1")), src);
  src.replace(0, 7, "CHANGED");
  src.replace(size_t(2 * kMiB), 7, "CHANGED");
  CHECK_BYTES(read_file(fs.path("src")), src);
  {
    Fd out = open_fd(fs.path("dst1"), O_WRONLY);
    pwrite_all(out, "DST", kMiB);
  }
  CHECK_BYTES(read_file(fs.path("src")), src);

  // Within one file: fine if the ranges do not overlap, EINVAL if they do.
  copy_range(in, 0, in, 3 * kMiB, 64 * 1024);
  src.replace(size_t(3 * kMiB), size_t(64 * kKiB), src.substr(0, size_t(64 * kKiB)));
  src.resize(std::max(src.size(), size_t(3 * kMiB + 64 * kKiB)));
  CHECK_BYTES(read_file(fs.path("src")), src);
  loff_t i = 0, o = 100;
  CHECK_ERRNO(::copy_file_range(in, &i, in, &o, 4096, 0), EINVAL);

  // The destination may not be opened O_APPEND.
  Fd app = open_fd(fs.path("dst1"), O_WRONLY | O_APPEND);
  i = 0;
  CHECK_ERRNO(::copy_file_range(in, &i, app, nullptr, 100, 0), EBADF);
}

TEST_CASE("fsync fdatasync and syncfs return 0", "[sync]") {
  MountedFs fs;
  SYS(::mkdir(fs.path("d").c_str(), 0755));
  Fd f = open_fd(fs.path("d/f"), O_RDWR | O_CREAT, 0644);
  pwrite_all(f, random_bytes(300000, 81), 0);
  CHECK_SYS(::fsync(f), ==, 0);
  pwrite_all(f, "more", 300000);
  CHECK_SYS(::fdatasync(f), ==, 0);
  CHECK_SYS(::syncfs(f), ==, 0);
  Fd ro = open_fd(fs.path("d/f"), O_RDONLY);
  CHECK_SYS(::fsync(ro), ==, 0);
  CHECK_SYS(::fdatasync(ro), ==, 0);
  Fd dir = open_fd(fs.path("d"), O_RDONLY | O_DIRECTORY);
  CHECK_SYS(::fsync(dir), ==, 0);
  CHECK_SYS(::fdatasync(dir), ==, 0);
  Fd root = open_fd(fs.root(), O_RDONLY | O_DIRECTORY);
  CHECK_SYS(::syncfs(root), ==, 0);
  CHECK_SYS(::sync_file_range(f, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                              SYNC_FILE_RANGE_WAIT_AFTER), ==, 0);
  CHECK(fstat_of(f).st_size == 300004);
}

TEST_CASE("mmap reads and shared writes", "[mmap]") {
  MountedFs fs;
  const std::string p = fs.path("m");
  std::string data = random_bytes(3 * 4096 + 100, 91);
  write_file(p, data);
  Fd fd = open_fd(p, O_RDWR);
  const size_t len = data.size();

  // Read mapping of an O_RDONLY fd.
  {
    Fd ro = open_fd(p, O_RDONLY);
    void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, ro, 0);
    REQUIRE(m != MAP_FAILED);
    CHECK_BYTES(std::string(static_cast<char*>(m), len), data);
    ::munmap(m, len);
  }

  void* mv = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int e = errno;
  INFO("mmap shared rw -> " << errname(mv == MAP_FAILED ? e : 0));
  REQUIRE(mv != MAP_FAILED);
  char* m = static_cast<char*>(mv);
  // write(2) is visible in the mapping.
  pwrite_all(fd, "COHERENT", 100);
  data.replace(100, 8, "COHERENT");
  CHECK_BYTES(std::string(m + 100, 8), "COHERENT");
  // Stores through the mapping: small, page-crossing, the last byte.
  std::memcpy(m + 10, "hello", 5);
  data.replace(10, 5, "hello");
  const std::string patch = random_bytes(3000, 92);
  std::memcpy(m + 8190, patch.data(), patch.size());
  data.replace(8190, patch.size(), patch);
  m[len - 1] = 'Z';
  data[len - 1] = 'Z';
  REQUIRE(::msync(m, len, MS_SYNC) == 0);
  {
    Fd other = open_fd(p, O_RDONLY);
    CHECK_BYTES(pread_all(other, len, 0), data);
  }
  REQUIRE(::munmap(m, len) == 0);
  CHECK_BYTES(read_file(p), data);
  CHECK(stat_of(p).st_size == off_t(len));

  // Private mappings do not write back.
  void* pv = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  REQUIRE(pv != MAP_FAILED);
  std::memset(pv, 'P', 4096);
  REQUIRE(::munmap(pv, len) == 0);
  CHECK_BYTES(read_file(p), data);

  // A shared mapping of a file grown with ftruncate.
  SYS(::ftruncate(fd, 8 * 4096));
  void* gv = ::mmap(nullptr, 8 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  REQUIRE(gv != MAP_FAILED);
  std::memcpy(static_cast<char*>(gv) + 7 * 4096, "grown", 5);
  REQUIRE(::msync(gv, 8 * 4096, MS_SYNC) == 0);
  REQUIRE(::munmap(gv, 8 * 4096) == 0);
  CHECK_BYTES(pread_all(fd, 5, 7 * 4096), "grown");
  CHECK_BYTES(pread_all(fd, 100, off_t(len)), zeros(100));
}

TEST_CASE("O_DIRECT aligned I/O", "[odirect]") {
  MountedFs fs;
  const std::string p = fs.path("direct");
  errno = 0;
  int raw = ::open(p.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
  int e = errno;
  INFO("open O_DIRECT -> " << errname(raw < 0 ? e : 0));
  REQUIRE(raw >= 0);
  Fd fd(raw);
  const size_t n = size_t(kMiB);
  auto w = aligned(n), r = aligned(n);
  const std::string data = random_bytes(n, 101);
  std::memcpy(w.get(), data.data(), n);
  CHECK_SYS(::pwrite(fd, w.get(), n, 0), ==, ssize_t(n));
  CHECK_SYS(::pwrite(fd, w.get(), 64 * 1024, 8 * kMiB), ==, 64 * 1024);
  CHECK_SYS(::pread(fd, r.get(), n, 0), ==, ssize_t(n));
  CHECK(std::memcmp(r.get(), data.data(), n) == 0);
  CHECK(fstat_of(fd).st_size == 8 * kMiB + 64 * kKiB);

  // Buffered and direct I/O see each other.
  Fd buffered = open_fd(p, O_RDWR);
  CHECK_BYTES(pread_all(buffered, n, 0), data);
  CHECK_BYTES(pread_all(buffered, 64 * 1024, 8 * kMiB), data.substr(0, 64 * 1024));
  pwrite_all(buffered, std::string(4096, 'b'), 4096);
  CHECK_SYS(::pread(fd, r.get(), 8192, 0), ==, 8192);
  CHECK_BYTES(std::string(r.get(), 4096), data.substr(0, 4096));
  CHECK_BYTES(std::string(r.get() + 4096, 4096), std::string(4096, 'b'));
  std::memset(w.get(), 'd', 4096);
  CHECK_SYS(::pwrite(fd, w.get(), 4096, 12288), ==, 4096);
  CHECK_BYTES(pread_all(buffered, 4096, 12288), std::string(4096, 'd'));
  // Reading past the end.
  CHECK_SYS(::pread(fd, r.get(), 8192, 8 * kMiB + 64 * kKiB), ==, 0);
}

TEST_CASE("an unlinked open file keeps its data until the last close", "[unlinked]") {
  MountedFs fs;
  const std::string p = fs.path("doomed");
  Fd root = open_fd(fs.root(), O_RDONLY | O_DIRECTORY);
  SYS(::syncfs(root));
  const uint64_t free_start = free_bytes(fs.root());

  const std::string data = random_bytes(size_t(32 * kMiB), 111);
  Fd fd = open_fd(p, O_RDWR | O_CREAT | O_EXCL, 0640);
  pwrite_all(fd, data, 0);
  SYS(::fsync(fd));
  Fd second = open_fd(p, O_RDONLY);
  const ino_t ino = fstat_of(fd).st_ino;

  SYS(::unlink(p.c_str()));
  struct stat st {};
  CHECK_ERRNO(::stat(p.c_str(), &st), ENOENT);
  CHECK(list_names(fs.root()).empty());
  st = fstat_of(fd);
  CHECK(st.st_nlink == 0);
  CHECK(st.st_size == off_t(data.size()));
  CHECK(st.st_ino == ino);
  CHECK_BYTES(pread_all(fd, data.size(), 0), data);
  // Still writable, truncatable, chmod-able.
  pwrite_all(fd, "appended", off_t(data.size()));
  CHECK(fstat_of(fd).st_size == off_t(data.size() + 8));
  SYS(::fchmod(fd, 0600));
  CHECK((fstat_of(fd).st_mode & 07777) == 0600);

  // A new file under the old name is a different file.
  write_file(p, "new");
  CHECK(lstat_of(p).st_ino != ino);
  CHECK_BYTES(read_file(p), "new");
  CHECK_BYTES(pread_all(fd, 8, off_t(data.size())), "appended");

  // The other descriptor keeps it alive after the first one closes.
  fd.close_checked();
  CHECK(fstat_of(second).st_nlink == 0);
  CHECK_BYTES(pread_all(second, data.size(), 0), data);
  second.close_checked();
  SYS(::unlink(p.c_str()));

  // After the last close the space comes back.
  SYS(::syncfs(root));
  uint64_t free_now = free_bytes(fs.root());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (free_now + 4 * uint64_t(kMiB) < free_start && std::chrono::steady_clock::now() < deadline) {
    sleep_ms(100);
    SYS(::syncfs(root));
    free_now = free_bytes(fs.root());
  }
  INFO("free at start " << free_start / kMiB << " MiB, at the end " << free_now / kMiB << " MiB");
  CHECK(free_now + 4 * uint64_t(kMiB) >= free_start);
}
