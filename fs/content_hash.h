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

// The streaming hash of one file being written from offset 0 onwards.
// Thread-safe. The kernel's writeback does not always send a file's pages
// in order: writes ahead of the hashed bytes wait in a bounded buffer until
// the gap before them is filled. A write into bytes already hashed or
// buffered, too much waiting, or any other change of the contents breaks
// the stream for good (the file is then hashed by reading it back).
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

  static constexpr std::size_t kMaxWaitingBytes = 32 << 20;

 private:
  void fail();
  struct State;
  std::mutex mu_;
  std::unique_ptr<State> state_;
  std::uint64_t upto_ = 0;
  bool broken_ = false;
  std::map<std::uint64_t, std::vector<std::byte>> waiting_;  // by offset, all beyond upto_
  std::size_t waiting_bytes_ = 0;
};

}  // namespace dhfs
