// Content hashes for dedup: the XXH3-128 hash of a byte range, and
// HashStream, which hashes a file's contents while sequential writes stream
// in, so that a file written front to back (tar, docker's layer extraction,
// cp) needs no re-read when it is closed.
//
// A hash is only ever a hint: every merge it suggests is verified byte by
// byte first. Tests prove that by making every hash collide
// (set_colliding_hashes_for_tests): dhfs must then still never merge
// different contents.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

namespace dhfs {

struct ContentHash {
  std::uint64_t lo = 0;
  std::uint64_t hi = 0;
  friend bool operator==(const ContentHash&, const ContentHash&) = default;
};

ContentHash hash_of(std::span<const std::byte> data);

// Test hook: from now on every hash of this process is the same value (0),
// as if XXH3 collided on everything. Only tests call this.
void set_colliding_hashes_for_tests(bool on);

// The content hash of a whole file: the XXH3-128 hash of the XXH3-128
// hashes (16 bytes each: low, then high 64 bits, little-endian) of its
// 1 MiB chunks, in order, the last chunk short. Hashing chunks apart lets a
// stream take a file's writes in any order of chunks (see HashStream).
ContentHash file_hash_of(std::span<const std::byte> data);

// The streaming file hash (file_hash_of) of one file being written.
// Thread-safe. The kernel's write-back does not send a file's pages in
// order: with FUSE over io_uring each CPU has its own queue, and one queue
// can fall hundreds of MiB behind another. Each 1 MiB chunk is hashed as its
// bytes arrive, so chunks may come in any order; within a chunk, bytes ahead
// of the hashed ones wait in a bounded buffer until the gap before them is
// filled. A write into bytes already hashed or buffered, too much waiting,
// or any other change of the contents breaks the stream for good (the file
// is then hashed by reading it back).
class HashStream {
 public:
  HashStream();
  ~HashStream();
  HashStream(const HashStream&) = delete;
  HashStream& operator=(const HashStream&) = delete;

  // Bytes [off, off + data.size()) are about to be written.
  void feed(std::uint64_t off, std::span<const std::byte> data);
  // The contents changed some other way (truncate, punch, a failed write).
  void break_off();
  // The hash of the file if its contents are exactly the `size` bytes fed.
  std::optional<ContentHash> digest(std::uint64_t size);
  // Whether a write went into bytes already hashed: the file was changed in
  // place, or its last page written back again by an append (as after an
  // overlay copy-up whose handle the kernel had not released yet).
  bool rewritten();

  static constexpr std::size_t kChunkBytes = 1 << 20;
  static constexpr std::size_t kMaxWaitingBytes = 32 << 20;
  // Streams stop at 1 TiB (the list of chunk hashes grows with the offset)
  // and at this many chunks partly hashed at once (an XXH3 state each).
  static constexpr std::uint64_t kMaxChunks = 1 << 20;
  static constexpr std::size_t kMaxOpenChunks = 1024;

 private:
  struct Chunk;
  void fail();
  // `data` lies inside chunk `index`, starting `at` bytes into it.
  void feed_chunk(std::uint64_t index, std::size_t at, std::span<const std::byte> data);

  std::mutex mu_;
  bool broken_ = false;
  bool rewritten_ = false;
  std::map<std::uint64_t, std::unique_ptr<Chunk>> open_;  // chunks partly hashed, by index
  std::vector<std::optional<ContentHash>> done_;          // by index: the hashes of complete chunks
  std::size_t waiting_bytes_ = 0;
};

}  // namespace dhfs
