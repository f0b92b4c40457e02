// File-level dedup through the core API (no FUSE): files whose bytes a
// stored file holds already share its extents once closed (small ones are
// never written at all); near-duplicates, empty and sparse files; changes
// after dedup copy on write; the persisted hashes across a reopen; offline
// dedup (dedup_file); dedup=off; region scope; concurrent writers; a build
// of the hash that collides on everything; crashes in the middle of dedup.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <string>
#include <thread>
#include <vector>

#include "fs/content_hash.h"
#include "fs/filesystem.h"
#include "fs/fsck.h"
#include "tests/unit/sharing_support.h"
#include "tests/unit/test_support.h"

namespace dhfs {
namespace {

using namespace sharing_test;
using test::kRoot;
using test::pattern;
using test::as_bytes;
using test::read_file;

// Every content hash of the process collides while one of these lives.
struct CollidingHashes {
  CollidingHashes() { set_colliding_hashes_for_tests(true); }
  ~CollidingHashes() { set_colliding_hashes_for_tests(false); }
  CollidingHashes(const CollidingHashes&) = delete;
  CollidingHashes& operator=(const CollidingHashes&) = delete;
};

// Creates `name` and writes `content` in 1 MiB writes (the kernel's
// writeback), then closes it: the close is where dedup happens.
Ino make_file(FileSystem& fs, Ino parent, std::string_view name, std::string_view content) {
  Attr a;
  REQUIRE(fs.create(parent, name, 0644, O_WRONLY | O_CREAT, kRoot, &a) == 0);
  write_chunked(fs, a.ino, 0, content);
  fs.release(a.ino);
  fs.forget(a.ino, 1);
  return a.ino;
}

std::uint64_t blocks_of(std::uint64_t bytes) { return (bytes + kB - 1) / kB; }

FsOptions dedup_opts(bool on = true) {
  FsOptions o = Rig::exact_cow();
  o.dedup = on;
  return o;
}

TEST_CASE("dedup: the streamed hash takes writes out of order, not rewrites", "[dedup]") {
  const std::string data = pattern(200000, 5);
  const auto piece = [&](std::size_t off, std::size_t len) { return as_bytes(std::string_view(data).substr(off, len)); };
  const ContentHash want = file_hash_of(as_bytes(data));
  {
    HashStream s;  // in order
    s.feed(0, piece(0, 100000));
    s.feed(100000, piece(100000, 100000));
    CHECK(s.digest(data.size()) == want);
    CHECK_FALSE(s.digest(data.size() + 1));
  }
  {
    HashStream s;  // the writeback sent the later pages first
    s.feed(150000, piece(150000, 50000));
    s.feed(50000, piece(50000, 100000));
    CHECK_FALSE(s.digest(data.size()));  // a gap is left
    s.feed(0, piece(0, 50000));
    CHECK(s.digest(data.size()) == want);
  }
  {
    HashStream s;  // a rewrite of hashed bytes
    s.feed(0, piece(0, 100000));
    CHECK_FALSE(s.rewritten());
    s.feed(50000, piece(50000, 150000));
    CHECK_FALSE(s.digest(data.size()));
    CHECK(s.rewritten());
  }
  {
    HashStream s;  // overlapping writes ahead
    s.feed(100000, piece(100000, 50000));
    s.feed(120000, piece(120000, 80000));
    s.feed(0, piece(0, 100000));
    CHECK_FALSE(s.digest(data.size()));
  }
  {
    HashStream s;  // more waiting than the bound: every chunk lacks its first 10 bytes
    constexpr std::size_t kChunk = HashStream::kChunkBytes;
    const std::size_t chunks = HashStream::kMaxWaitingBytes / (kChunk - 10) + 1;
    const std::string big(chunks * kChunk, 'x');
    for (std::size_t c = 0; c < chunks; ++c) s.feed(c * kChunk + 10, as_bytes(std::string_view(big).substr(0, kChunk - 10)));
    for (std::size_t c = 0; c < chunks; ++c) s.feed(c * kChunk, as_bytes(std::string_view(big).substr(0, 10)));
    CHECK_FALSE(s.digest(big.size()));
  }
  {
    HashStream s;
    s.feed(0, piece(0, 100000));
    s.break_off();
    s.feed(100000, piece(100000, 100000));
    CHECK_FALSE(s.digest(data.size()));
    CHECK_FALSE(s.rewritten());  // broken, but by something else
  }
}

// overlayfs truncates every file it copies up to the size it has: no byte
// changes, so the file keeps its content hash (and a stream its hashing).
TEST_CASE("dedup: a truncate to the file's own size is no change of its contents", "[dedup]") {
  Rig rig(256 * kMiB, dedup_opts());
  const std::string data = pattern(3 * kMiB + 123, 31);
  const Ino a = make_file(*rig.fs, kRootIno, "a", data);
  REQUIRE(rig.fs->content_hash_of(a));
  truncate_to(*rig.fs, a, data.size());
  CHECK(rig.fs->content_hash_of(a));  // not withdrawn
  const std::uint64_t one = physical_blocks(*rig.fs);
  make_file(*rig.fs, kRootIno, "b", data);  // finds a by its hash
  CHECK(physical_blocks(*rig.fs) == one);

  // Copied up: written from empty, truncated to its size, closed: hashed
  // from the stream, and shared like any copy.
  Attr c;
  REQUIRE(rig.fs->create(kRootIno, "c", 0644, O_WRONLY | O_CREAT, kRoot, &c) == 0);
  write_chunked(*rig.fs, c.ino, 0, data);
  truncate_to(*rig.fs, c.ino, data.size());
  rig.fs->release(c.ino);
  CHECK(rig.fs->content_hash_of(c.ino));
  CHECK(physical_blocks(*rig.fs) == one);

  truncate_to(*rig.fs, a, data.size() - 1);  // a real one
  CHECK_FALSE(rig.fs->content_hash_of(a));
  CHECK_CONTENT(*rig.fs, a, data.substr(0, data.size() - 1));
  CHECK_CONTENT(*rig.fs, c.ino, data);
}

// A file written from empty whose written bytes are written again before
// its last close (a copy-up appended to while overlayfs's handle is still
// open: the append writes the last page back again) was changed in place:
// like a file opened with data, it is left to offline dedup rather than
// read back at its close.
TEST_CASE("dedup: a file rewritten while open is not hashed at its close", "[dedup]") {
  Rig rig(256 * kMiB, dedup_opts());
  const std::string data = pattern(36568, 32);
  const Ino a = make_file(*rig.fs, kRootIno, "a", data);
  const std::uint64_t one = physical_blocks(*rig.fs);
  Attr b;
  REQUIRE(rig.fs->create(kRootIno, "b", 0644, O_WRONLY | O_CREAT, kRoot, &b) == 0);
  write_bytes(*rig.fs, b.ino, 0, data);  // the copy: shared with a
  const std::string appended = data + "c\n";
  write_bytes(*rig.fs, b.ino, 32768, std::string_view(appended).substr(32768));  // the append's write-back
  rig.fs->release(b.ino);
  CHECK_FALSE(rig.fs->content_hash_of(b.ino));
  CHECK_CONTENT(*rig.fs, b.ino, appended);
  CHECK_CONTENT(*rig.fs, a, data);

  // Offline dedup still hashes it.
  DedupOutcome out;
  REQUIRE(rig.fs->dedup_file(b.ino, &out) == 0);
  CHECK(out.hashed);
  CHECK(rig.fs->content_hash_of(b.ino));
  CHECK(physical_blocks(*rig.fs) >= one);
}

TEST_CASE("dedup: the file hash is the hash of its 1 MiB chunks' hashes, in any order of chunks", "[dedup]") {
  constexpr std::size_t kChunk = HashStream::kChunkBytes;
  const std::string data = pattern(5 * kChunk + 123, 9);
  const auto piece = [&](std::size_t off, std::size_t len) {
    return as_bytes(std::string_view(data).substr(off, std::min(len, data.size() - off)));
  };
  // The definition (docs/FORMAT.md, CONTENT_HASH), spelled out.
  std::string list;
  for (std::size_t off = 0; off < data.size(); off += kChunk) {
    const ContentHash h = hash_of(piece(off, kChunk));
    for (int b = 0; b < 8; ++b) list += static_cast<char>(h.lo >> (8 * b));
    for (int b = 0; b < 8; ++b) list += static_cast<char>(h.hi >> (8 * b));
  }
  const ContentHash want = hash_of(as_bytes(list));
  CHECK(file_hash_of(as_bytes(data)) == want);
  CHECK_FALSE(file_hash_of(as_bytes(data)) == hash_of(as_bytes(data)));

  SECTION("write-back pieces of 1 MiB, not chunk-aligned, last one first") {
    HashStream s;
    std::vector<std::size_t> starts = {0};
    for (std::size_t off = kChunk / 2; off < data.size(); off += kChunk) starts.push_back(off);
    for (auto it = starts.rbegin(); it != starts.rend(); ++it) {
      const std::size_t len = *it == 0 ? kChunk / 2 : kChunk;
      s.feed(*it, piece(*it, len));
      if (*it != 0) CHECK_FALSE(s.digest(data.size()));
    }
    CHECK(s.digest(data.size()) == want);
    CHECK_FALSE(s.digest(data.size() - 1));
    CHECK_FALSE(s.digest(data.size() + 1));
  }
  SECTION("whole chunks in a scrambled order") {
    HashStream s;
    for (std::size_t c : {3, 0, 5, 1, 4, 2}) s.feed(c * kChunk, piece(c * kChunk, kChunk));
    CHECK(s.digest(data.size()) == want);
  }
  SECTION("a rewrite of a complete chunk breaks the stream") {
    HashStream s;
    s.feed(0, piece(0, data.size()));
    REQUIRE(s.digest(data.size()) == want);
    s.feed(kChunk + 5, piece(kChunk + 5, 1));
    CHECK_FALSE(s.digest(data.size()));
  }
  SECTION("too many chunks begun and none finished breaks the stream") {
    HashStream s;
    const std::string big((HashStream::kMaxOpenChunks + 2) * kChunk, 'y');
    for (std::size_t c = 0; c < HashStream::kMaxOpenChunks + 2; ++c)
      s.feed(c * kChunk, as_bytes(std::string_view(big).substr(0, 4096)));
    for (std::size_t c = 0; c < HashStream::kMaxOpenChunks + 2; ++c)
      s.feed(c * kChunk + 4096, as_bytes(std::string_view(big).substr(0, kChunk - 4096)));
    CHECK_FALSE(s.digest(big.size()));
  }
}

TEST_CASE("dedup: identical files are stored once", "[dedup]") {
  // (small: shared before it is written; 64 KiB + 1 and larger: shared at
  // close; a size that is not a multiple of the block)
  const std::size_t size = GENERATE(std::size_t{1}, std::size_t{10000}, std::size_t{65537}, std::size_t{3 * kMiB + 123});
  INFO("size " << size);
  Rig rig(256 * kMiB, dedup_opts());
  const std::string data = pattern(size, 7);
  const Ino a = make_file(*rig.fs, kRootIno, "a", data);
  const std::uint64_t one = physical_blocks(*rig.fs);
  CHECK(one == blocks_of(size));
  const Ino b = make_file(*rig.fs, kRootIno, "b", data);
  const Ino c = make_file(*rig.fs, kRootIno, "c", data);
  CHECK(physical_blocks(*rig.fs) == one);
  CHECK(synced(*rig.fs).saved_blocks == 2 * blocks_of(size));
  CHECK_CONTENT(*rig.fs, a, data);
  CHECK_CONTENT(*rig.fs, b, data);
  CHECK_CONTENT(*rig.fs, c, data);

  // The hashes are persisted: after a reopen a fourth copy finds them.
  rig.reopen();
  const Ino d = make_file(*rig.fs, kRootIno, "d", data);
  CHECK(physical_blocks(*rig.fs) == one);
  CHECK_CONTENT(*rig.fs, d, data);
  if (size <= 64 * 1024) {
    // A small copy takes the stored extents at its write, before it is
    // closed: its hash (computed from the write alone) is the one stored
    // files carry.
    Attr e;
    REQUIRE(rig.fs->create(kRootIno, "e", 0644, O_WRONLY | O_CREAT, kRoot, &e) == 0);
    write_bytes(*rig.fs, e.ino, 0, data);
    CHECK(physical_blocks(*rig.fs) == one);
    rig.fs->release(e.ino);
    rig.fs->forget(e.ino, 1);
  }

  // A change after dedup copies on write; the others keep their bytes.
  std::string changed = data;
  changed[size / 2] ^= 0x5a;
  write_bytes(*rig.fs, b, size / 2, changed.substr(size / 2, 1));
  CHECK_CONTENT(*rig.fs, b, changed);
  CHECK_CONTENT(*rig.fs, a, data);
  CHECK_CONTENT(*rig.fs, c, data);
  CHECK_CONTENT(*rig.fs, d, data);
  rig.reopen();
  CHECK_CONTENT(*rig.fs, b, changed);
  CHECK_CONTENT(*rig.fs, a, data);
}

TEST_CASE("dedup: files that differ in one byte are not merged", "[dedup]") {
  const std::size_t size = GENERATE(std::size_t{30000}, std::size_t{2 * kMiB + 5});
  const char* where = GENERATE("start", "middle", "end");
  INFO("size " << size << ", differs at the " << where);
  const std::size_t at = std::string_view(where) == "start" ? 0 : std::string_view(where) == "middle" ? size / 2 : size - 1;
  Rig rig(256 * kMiB, dedup_opts());
  const std::string data = pattern(size, 11);
  std::string other = data;
  other[at] = static_cast<char>(other[at] + 1);
  const Ino a = make_file(*rig.fs, kRootIno, "a", data);
  const Ino b = make_file(*rig.fs, kRootIno, "b", other);
  CHECK_CONTENT(*rig.fs, a, data);
  CHECK_CONTENT(*rig.fs, b, other);
  // Only whole 64 KiB chunks the two have in common may be shared (see
  // ChunkIndex); the one holding the difference never is.
  CHECK(physical_blocks(*rig.fs) > blocks_of(size));
  if (size < kChunkBytes) CHECK(physical_blocks(*rig.fs) == 2 * blocks_of(size));
  rig.reopen();
  CHECK_CONTENT(*rig.fs, a, data);
  CHECK_CONTENT(*rig.fs, b, other);
}

TEST_CASE("dedup: colliding hashes never merge different contents", "[dedup]") {
  CollidingHashes collide;
  Rig rig(256 * kMiB, dedup_opts());
  // Files of one size (every hash and size equal) and different bytes.
  const std::size_t size = GENERATE(std::size_t{4096}, std::size_t{50000}, std::size_t{kMiB + 17});
  INFO("size " << size);
  std::vector<std::string> contents;
  std::vector<Ino> inos;
  for (int i = 0; i < 4; ++i) {
    contents.push_back(pattern(size, 100 + i));
    inos.push_back(make_file(*rig.fs, kRootIno, "f" + std::to_string(i), contents.back()));
  }
  CHECK(physical_blocks(*rig.fs) == 4 * blocks_of(size));
  // Equal contents still merge: the bytes decide, not the hash.
  const Ino twin = make_file(*rig.fs, kRootIno, "twin", contents[2]);
  CHECK(physical_blocks(*rig.fs) == 4 * blocks_of(size));
  for (int i = 0; i < 4; ++i) CHECK_CONTENT(*rig.fs, inos[i], contents[i]);
  CHECK_CONTENT(*rig.fs, twin, contents[2]);
  DedupOutcome out;
  for (Ino ino : inos) REQUIRE(rig.fs->dedup_file(ino, &out) == 0);
  CHECK(physical_blocks(*rig.fs) == 4 * blocks_of(size));
  rig.reopen();
  for (int i = 0; i < 4; ++i) CHECK_CONTENT(*rig.fs, inos[i], contents[i]);
}

TEST_CASE("dedup: empty and sparse files", "[dedup]") {
  Rig rig(256 * kMiB, dedup_opts());
  const Ino e1 = make_file(*rig.fs, kRootIno, "e1", "");
  const Ino e2 = make_file(*rig.fs, kRootIno, "e2", "");
  CHECK(physical_blocks(*rig.fs) == 0);
  CHECK(read_file(*rig.fs, e1).empty());
  CHECK(read_file(*rig.fs, e2).empty());

  // Written out of order (no streamed hash: hashed by reading at close),
  // with a hole in the middle.
  const std::string head = pattern(100000, 3), tail = pattern(70000, 4);
  const std::uint64_t tail_at = 8 * kMiB;
  std::string want(tail_at + tail.size(), '\0');
  std::copy(head.begin(), head.end(), want.begin());
  std::copy(tail.begin(), tail.end(), want.begin() + static_cast<std::ptrdiff_t>(tail_at));
  auto sparse = [&](std::string_view name) {
    Attr a;
    REQUIRE(rig.fs->create(kRootIno, name, 0644, O_WRONLY | O_CREAT, kRoot, &a) == 0);
    write_bytes(*rig.fs, a.ino, tail_at, tail);
    write_bytes(*rig.fs, a.ino, 0, head);
    rig.fs->release(a.ino);
    rig.fs->forget(a.ino, 1);
    return a.ino;
  };
  const Ino s1 = sparse("s1");
  const std::uint64_t one = physical_blocks(*rig.fs);
  const Ino s2 = sparse("s2");
  CHECK(physical_blocks(*rig.fs) == one);
  CHECK_CONTENT(*rig.fs, s1, want);
  CHECK_CONTENT(*rig.fs, s2, want);
  // The hole stays a hole.
  CHECK(rig.fs->lseek(s2, 0, SEEK_HOLE) == static_cast<std::int64_t>(blocks_of(head.size()) * kB));
  CHECK(rig.fs->lseek(s2, kMiB, SEEK_DATA) == static_cast<std::int64_t>(tail_at));
  rig.reopen();
  CHECK_CONTENT(*rig.fs, s2, want);
}

TEST_CASE("dedup: off stores every copy, offline dedup merges them later", "[dedup]") {
  Rig rig(256 * kMiB, dedup_opts(false));
  const std::string big = pattern(2 * kMiB + 100, 21), small = pattern(5000, 22);
  std::vector<Ino> files;
  for (int i = 0; i < 3; ++i) {
    files.push_back(make_file(*rig.fs, kRootIno, "big" + std::to_string(i), big));
    files.push_back(make_file(*rig.fs, kRootIno, "small" + std::to_string(i), small));
  }
  const std::uint64_t all = 3 * (blocks_of(big.size()) + blocks_of(small.size()));
  CHECK(physical_blocks(*rig.fs) == all);
  DedupOutcome out;
  REQUIRE(rig.fs->dedup_file(files[0], &out) == 0);
  CHECK_FALSE(out.hashed);  // dedup=off: nothing is done

  // The same image mounted with dedup on: offline dedup finds the copies.
  rig.opts = dedup_opts(true);
  rig.reopen();
  std::uint64_t freed = 0, duplicates = 0;
  for (Ino ino : files) {
    REQUIRE(rig.fs->dedup_file(ino, &out) == 0);
    CHECK(out.hashed);
    freed += out.freed_blocks;
    duplicates += out.duplicate;
  }
  CHECK(duplicates == 4);
  CHECK(freed == 2 * (blocks_of(big.size()) + blocks_of(small.size())));
  CHECK(physical_blocks(*rig.fs) == blocks_of(big.size()) + blocks_of(small.size()));
  // A second pass finds nothing more to free.
  freed = 0;
  for (Ino ino : files) {
    REQUIRE(rig.fs->dedup_file(ino, &out) == 0);
    freed += out.freed_blocks;
  }
  CHECK(freed == 0);
  for (std::size_t i = 0; i < files.size(); ++i) CHECK_CONTENT(*rig.fs, files[i], i % 2 ? small : big);
  rig.reopen();
}

TEST_CASE("dedup: region scope keeps tenants apart", "[dedup]") {
  FsOptions o = dedup_opts();
  o.dedup_region_scope = true;
  Rig rig(256 * kMiB, o);
  Attr t1, t2;
  REQUIRE(rig.fs->mkdir(kRootIno, "tenant1", 0755, kRoot, &t1) == 0);
  REQUIRE(rig.fs->mkdir(kRootIno, "tenant2", 0755, kRoot, &t2) == 0);
  REQUIRE(rig.fs->create_region(t1.ino, 16 * kMiB) == 0);
  REQUIRE(rig.fs->create_region(t2.ino, 16 * kMiB) == 0);
  const std::string big = pattern(kMiB + 300, 31), small = pattern(3000, 32);
  const std::uint64_t per_copy = blocks_of(big.size()) + blocks_of(small.size());
  make_file(*rig.fs, t1.ino, "big", big);
  make_file(*rig.fs, t1.ino, "small", small);
  make_file(*rig.fs, t2.ino, "big", big);
  make_file(*rig.fs, t2.ino, "small", small);
  CHECK(physical_blocks(*rig.fs) == 2 * per_copy);  // nothing shared across regions
  make_file(*rig.fs, t1.ino, "big2", big);         // within one region: shared
  make_file(*rig.fs, t1.ino, "small2", small);
  CHECK(physical_blocks(*rig.fs) == 2 * per_copy);
  rig.reopen();
}

TEST_CASE("dedup: concurrent writers of the same contents", "[dedup]") {
  Rig rig(512 * kMiB, dedup_opts());
  const std::string data = pattern(4 * kMiB + 1000, 41);
  constexpr int kWriters = 6;
  std::vector<Ino> inos(kWriters);
  std::atomic<int> failures{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kWriters; ++t)
      threads.emplace_back([&, t] {
        Attr a;
        if (rig.fs->create(kRootIno, "w" + std::to_string(t), 0644, O_WRONLY | O_CREAT, kRoot, &a) != 0) {
          ++failures;
          return;
        }
        inos[t] = a.ino;
        for (std::uint64_t off = 0; off < data.size(); off += 256 << 10) {
          const std::string_view piece = std::string_view(data).substr(off, 256 << 10);
          if (rig.fs->write(a.ino, off, as_bytes(piece)) != static_cast<ssize_t>(piece.size())) ++failures;
        }
        rig.fs->release(a.ino);
        rig.fs->forget(a.ino, 1);
      });
  }
  REQUIRE(failures == 0);
  for (Ino ino : inos) CHECK_CONTENT(*rig.fs, ino, data);
  // Writers that raced may each have kept their own copy; an offline pass
  // leaves one.
  DedupOutcome out;
  for (Ino ino : inos) REQUIRE(rig.fs->dedup_file(ino, &out) == 0);
  CHECK(physical_blocks(*rig.fs) == blocks_of(data.size()));
  for (Ino ino : inos) CHECK_CONTENT(*rig.fs, ino, data);
  rig.reopen();
}

TEST_CASE("dedup: truncate, punch and rewrite after dedup leave the others alone", "[dedup]") {
  Rig rig(256 * kMiB, dedup_opts());
  const std::string data = pattern(3 * kMiB, 51);
  const Ino a = make_file(*rig.fs, kRootIno, "a", data);
  const Ino b = make_file(*rig.fs, kRootIno, "b", data);
  const Ino c = make_file(*rig.fs, kRootIno, "c", data);
  CHECK(physical_blocks(*rig.fs) == blocks_of(data.size()));
  truncate_to(*rig.fs, a, kMiB + 3);
  punch(*rig.fs, b, 100000, 500000);
  std::string punched = data;
  std::fill(punched.begin() + 100000, punched.begin() + 600000, '\0');
  CHECK_CONTENT(*rig.fs, a, data.substr(0, kMiB + 3));
  CHECK_CONTENT(*rig.fs, b, punched);
  CHECK_CONTENT(*rig.fs, c, data);
  // A new copy of the original bytes still finds c.
  const std::uint64_t before = physical_blocks(*rig.fs);
  const Ino d = make_file(*rig.fs, kRootIno, "d", data);
  CHECK(physical_blocks(*rig.fs) == before);
  CHECK_CONTENT(*rig.fs, d, data);
  // Rewritten whole in place (open, write over it, close): a new hash.
  REQUIRE(rig.fs->open(c, O_WRONLY) == 0);
  const std::string other = pattern(3 * kMiB, 52);
  write_chunked(*rig.fs, c, 0, other);
  rig.fs->release(c);
  CHECK_CONTENT(*rig.fs, c, other);
  CHECK_CONTENT(*rig.fs, d, data);
  const Ino e = make_file(*rig.fs, kRootIno, "e", other);
  CHECK_CONTENT(*rig.fs, e, other);
  rig.reopen();
  CHECK_CONTENT(*rig.fs, d, data);
  CHECK_CONTENT(*rig.fs, e, other);
}

// A crash at every device write of a workload that dedups: each image must
// mount, pass fsck, keep the durable original exactly, and hold each copy
// as a prefix of the original bytes (never other bytes).
TEST_CASE("dedup: crash at any point of dedup", "[dedup][crash]") {
  std::shared_ptr<MemDevice> medium;
  auto hook = std::make_shared<test::IoHook>();
  std::vector<std::shared_ptr<MemDevice>> crashes;
  const std::string data = pattern(kMiB + 5000, 61), small = pattern(9000, 62);
  {
    medium = test::format_medium(64 * kMiB);
    std::string error;
    auto fs = test::try_open_fs(medium, error, dedup_opts(), hook);
    REQUIRE(fs);
    make_file(*fs, kRootIno, "orig", data);
    make_file(*fs, kRootIno, "orig_small", small);
    REQUIRE(fs->syncfs() == 0);
    *hook = [&](std::span<const DeviceIo>) {
      crashes.push_back(test::crash_copy(medium));
      return 0;
    };
    for (int i = 0; i < 4; ++i) {
      make_file(*fs, kRootIno, "copy" + std::to_string(i), data);
      make_file(*fs, kRootIno, "small" + std::to_string(i), small);
      if (i == 1) {
        REQUIRE(fs->syncfs() == 0);
        // Change a copy (withdraws its hash durably first).
        test::write_at(*fs, test::resolve(*fs, "copy0"), 10, "changed");
      }
    }
    REQUIRE(fs->shutdown() == 0);
    *hook = nullptr;
  }
  crashes.push_back(test::crash_copy(medium));
  INFO(crashes.size() << " crash images");
  REQUIRE(crashes.size() >= 15);
  for (std::size_t i = 0; i < crashes.size(); ++i) {
    INFO("crash image " << i);
    auto fs = test::open_fs(crashes[i], dedup_opts());
    CHECK_CONTENT(*fs, test::resolve(*fs, "orig"), data);
    CHECK_CONTENT(*fs, test::resolve(*fs, "orig_small"), small);
    for (const std::string& name : test::list_dir(*fs, kRootIno)) {
      const std::string got = read_file(*fs, test::resolve(*fs, name));
      const std::string& full = name.starts_with("small") || name == "orig_small" ? small : data;
      std::string want = full.substr(0, got.size());
      if (name == "copy0" && got != want && got.size() >= 17) want.replace(10, 7, "changed");  // after the change
      INFO(name << ": " << got.size() << " bytes");
      CHECK(got == want);
      // A persisted hash always describes the file as it is.
      if (auto h = fs->content_hash_of(test::resolve(*fs, name))) CHECK(*h == file_hash_of(as_bytes(got)));
    }
    REQUIRE(fs->shutdown() == 0);
    fs.reset();
    check_image(crashes[i]);
  }
}

}  // namespace
}  // namespace dhfs
