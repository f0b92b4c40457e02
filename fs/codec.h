// Little-endian encoding of on-disk fields. ByteReader never reads past its
// span: a short or malformed input sets a sticky failure flag instead, so
// parsers of untrusted images check ok() once at the end of a structure.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace dhfs {

static_assert(std::endian::native == std::endian::little, "dhfs encodes on-disk fields little-endian");

class ByteWriter {
 public:
  explicit ByteWriter(std::vector<std::uint8_t>& out) : out_(out) {}

  template <typename T>
    requires std::is_integral_v<T>
  void put(T v) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  void put_bytes(const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  void put_string(std::string_view s) { put_bytes(s.data(), s.size()); }
  std::size_t size() const { return out_.size(); }

  // Overwrites a previously written integer at byte `pos` (length prefixes).
  template <typename T>
    requires std::is_integral_v<T>
  void patch(std::size_t pos, T v) {
    std::memcpy(out_.data() + pos, &v, sizeof(T));
  }

 private:
  std::vector<std::uint8_t>& out_;
};

class ByteReader {
 public:
  ByteReader() = default;
  explicit ByteReader(std::span<const std::uint8_t> in) : in_(in) {}

  template <typename T>
    requires std::is_integral_v<T>
  T get() {
    T v{};
    if (!need(sizeof(T))) return v;
    std::memcpy(&v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::span<const std::uint8_t> get_bytes(std::size_t n) {
    if (!need(n)) return {};
    auto s = in_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  std::string_view get_string(std::size_t n) {
    auto b = get_bytes(n);
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }
  std::span<const std::uint8_t> rest() { return get_bytes(remaining()); }

  std::size_t remaining() const { return ok_ ? in_.size() - pos_ : 0; }
  std::size_t position() const { return pos_; }
  bool ok() const { return ok_; }
  void fail() { ok_ = false; }

 private:
  bool need(std::size_t n) {
    if (!ok_ || in_.size() - pos_ < n) {
      ok_ = false;
      return false;
    }
    return true;
  }

  std::span<const std::uint8_t> in_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace dhfs
