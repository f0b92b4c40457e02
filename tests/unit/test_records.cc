// Tests of fs/records.h: every record type round-trips, malformed input is
// rejected with a reason, and random bytes never crash the decoder.
#include <algorithm>
#include <climits>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fs/records.h"
#include "tests/unit/test_support.h"

namespace dhfs {
namespace {

std::vector<Record> decode_all(const std::vector<std::uint8_t>& bytes, bool& ok, std::string& why) {
  std::vector<Record> out;
  ok = decode_records(
      bytes,
      [&](const Record& r) {
        out.push_back(r);
        return true;
      },
      why);
  return out;
}

std::vector<std::uint8_t> encode(const Record& r) {
  std::vector<std::uint8_t> b;
  RecordWriter w(b);
  w.add(r);
  return b;
}

// Hand-built encoding: u8 type, u32 length, body.
std::vector<std::uint8_t> raw(std::uint8_t type, const std::vector<std::uint8_t>& body) {
  const auto len = static_cast<std::uint32_t>(body.size());
  std::vector<std::uint8_t> b(5 + body.size());
  b[0] = type;
  std::memcpy(b.data() + 1, &len, 4);
  std::copy(body.begin(), body.end(), b.begin() + 5);
  return b;
}

template <typename T>
void put(std::vector<std::uint8_t>& b, T v) {
  // (resize + memcpy: GCC 12 warns falsely about insert() of a range here)
  const std::size_t at = b.size();
  b.resize(at + sizeof v);
  std::memcpy(b.data() + at, &v, sizeof v);
}
void put_str(std::vector<std::uint8_t>& b, std::string_view s) { b.insert(b.end(), s.begin(), s.end()); }

using test::same_record;

bool rejected(const std::vector<std::uint8_t>& bytes, std::string& why) {
  bool ok;
  why.clear();
  decode_all(bytes, ok, why);
  return !ok;
}

}  // namespace

TEST_CASE("records: every record type round-trips", "[records]") {
  const std::string target(kSymlinkMax, 't');
  const std::string longname(kNameMax, 'n');
  const std::string xname(kXattrNameMax, 'x');
  const std::string xvalue(kXattrValueMax, '\0');
  InodeRec full{42, 7, 0100644, 1000, 1001, 3, 0x0801, 5ULL << 32, -5, 1700000000123456789LL, 1, -1, 9, 11, {}};
  InodeRec symlink_rec{43, 1, 0120777, 0, 0, 1, 0, target.size(), 0, 0, 0, 0, 0, 0, target};
  std::vector<Record> recs = {
      full,
      symlink_rec,
      InodeRec{1, 0, 040755, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, {}},
      InodeRec{9, ~0ULL, 0140000, ~0u, ~0u, ~0u, ~0u, ~0ULL, INT64_MIN, INT64_MAX, 0, 0, ~0u, ~0u, {}},
      InodeFreeRec{~0ULL},
      DirentSetRec{1, 99, 8, "a"},
      DirentSetRec{~0ULL, ~0ULL, 255, longname},
      DirentSetRec{2, 3, 4, "name with spaces\x01\xff"},
      DirentDelRec{1, "gone"},
      DirentDelRec{1, longname},
      ExtentSetRec{5, 0, 1, 100, 0},
      ExtentSetRec{5, 10, ~0ULL - 10, 0, 0},  // unmap to the end of the address space
      ExtentSetRec{5, 1ULL << 40, 1ULL << 33, 1ULL << 20, kExtentUnwritten},
      XattrSetRec{6, "user.a", ""},
      XattrSetRec{6, xname, xvalue},
      XattrSetRec{6, "trusted.overlay.opaque", "y"},
      XattrDelRec{6, "user.a"},
      XattrDelRec{6, xname},
  };
  std::vector<std::uint8_t> bytes;
  RecordWriter w(bytes);
  for (const Record& r : recs) w.add(r);
  CHECK(w.count() == recs.size());

  bool ok;
  std::string why;
  auto out = decode_all(bytes, ok, why);
  INFO(why);
  REQUIRE(ok);
  CHECK(why.empty());
  REQUIRE(out.size() == recs.size());
  for (std::size_t i = 0; i < recs.size(); ++i) {
    INFO("record " << i);
    INFO(test::describe_record(recs[i]) << " vs " << test::describe_record(out[i]));
    CHECK(same_record(recs[i], out[i]));
  }
}

TEST_CASE("records: decoded views point into the input", "[records]") {
  auto bytes = encode(DirentSetRec{1, 2, 8, "hello"});
  bool ok;
  std::string why;
  auto out = decode_all(bytes, ok, why);
  REQUIRE(ok);
  REQUIRE(out.size() == 1);
  auto name = std::get<DirentSetRec>(out[0]).name;
  CHECK(reinterpret_cast<const std::uint8_t*>(name.data()) >= bytes.data());
  CHECK(reinterpret_cast<const std::uint8_t*>(name.data()) + name.size() <= bytes.data() + bytes.size());
}

TEST_CASE("records: an empty input decodes to nothing", "[records]") {
  bool ok;
  std::string why;
  auto out = decode_all({}, ok, why);
  CHECK(ok);
  CHECK(out.empty());
}

TEST_CASE("records: decode stops without a reason when the callback refuses", "[records]") {
  std::vector<std::uint8_t> bytes;
  RecordWriter w(bytes);
  w.add(InodeFreeRec{1});
  w.add(InodeFreeRec{2});
  w.add(InodeFreeRec{3});
  int seen = 0;
  std::string why;
  bool ok = decode_records(
      bytes,
      [&](const Record&) {
        ++seen;
        return seen < 2;
      },
      why);
  CHECK_FALSE(ok);
  CHECK(why.empty());
  CHECK(seen == 2);
}

TEST_CASE("records: every truncation of a valid stream is rejected with a reason", "[records]") {
  std::vector<std::uint8_t> bytes;
  RecordWriter w(bytes);
  w.add(InodeRec{7, 1, 0100644, 0, 0, 1, 0, 10, 1, 2, 3, 4, 0, 0, {}});
  w.add(DirentSetRec{1, 7, 8, "file"});
  w.add(ExtentSetRec{7, 0, 3, 500, 0});
  w.add(XattrSetRec{7, "user.k", "value"});
  w.add(XattrDelRec{7, "user.k"});
  w.add(DirentDelRec{1, "file"});
  w.add(InodeFreeRec{7});
  // Offsets at which a record ends: cutting there leaves a valid stream.
  std::vector<std::size_t> boundaries;
  {
    std::size_t pos = 0;
    while (pos < bytes.size()) {
      std::uint32_t len;
      std::memcpy(&len, bytes.data() + pos + 1, 4);
      pos += 5 + len;
      boundaries.push_back(pos);
    }
    REQUIRE(pos == bytes.size());
  }
  for (std::size_t cut = 1; cut < bytes.size(); ++cut) {
    std::vector<std::uint8_t> part(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(cut));
    bool ok;
    std::string why;
    auto out = decode_all(part, ok, why);
    bool boundary = std::find(boundaries.begin(), boundaries.end(), cut) != boundaries.end();
    INFO("cut at " << cut);
    CHECK(ok == boundary);
    if (!boundary) CHECK_FALSE(why.empty());
  }
}

TEST_CASE("records: bad lengths are rejected", "[records]") {
  std::string why;
  SECTION("length beyond the input") {
    auto b = encode(InodeFreeRec{5});
    std::uint32_t len = 1000;
    std::memcpy(b.data() + 1, &len, 4);
    CHECK(rejected(b, why));
    CHECK(why == "truncated record");
  }
  SECTION("length 0xffffffff") {
    auto b = encode(DirentDelRec{1, "x"});
    std::uint32_t len = 0xffffffff;
    std::memcpy(b.data() + 1, &len, 4);
    CHECK(rejected(b, why));
    CHECK_FALSE(why.empty());
  }
  SECTION("fixed-size body too short") {
    std::vector<std::uint8_t> body;
    put<std::uint32_t>(body, 5);  // an InodeFree body needs 8 bytes
    CHECK(rejected(raw(2, body), why));
    CHECK_FALSE(why.empty());
  }
  SECTION("fixed-size body too long") {
    std::vector<std::uint8_t> body;
    put<std::uint64_t>(body, 5);
    put<std::uint8_t>(body, 0);
    CHECK(rejected(raw(2, body), why));
    CHECK_FALSE(why.empty());
  }
  SECTION("extent body with trailing bytes") {
    auto b = encode(ExtentSetRec{1, 0, 1, 10, 0});
    std::uint32_t len;
    std::memcpy(&len, b.data() + 1, 4);
    ++len;
    std::memcpy(b.data() + 1, &len, 4);
    b.push_back(0);
    CHECK(rejected(b, why));
    CHECK_FALSE(why.empty());
  }
  SECTION("inode body cut before its fixed fields end") {
    auto b = encode(InodeRec{1, 1, 040755, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, {}});
    std::uint32_t len = 30;
    std::memcpy(b.data() + 1, &len, 4);
    b.resize(5 + len);
    CHECK(rejected(b, why));
    CHECK_FALSE(why.empty());
  }
  SECTION("xattr name length beyond the body") {
    std::vector<std::uint8_t> body;
    put<std::uint64_t>(body, 3);
    put<std::uint8_t>(body, 200);
    put_str(body, "user.short");
    CHECK(rejected(raw(6, body), why));
    CHECK_FALSE(why.empty());
  }
}

TEST_CASE("records: invalid directory entry names are rejected", "[records]") {
  const std::string too_long(kNameMax + 1, 'a');
  const std::string bad[] = {"", ".", "..", "a/b", "/", std::string("a\0b", 3), std::string(1, '\0'), too_long};
  for (const std::string& name : bad) {
    INFO("name '" << name << "' (" << name.size() << " bytes)");
    std::string why;
    CHECK(rejected(encode(DirentSetRec{1, 2, 8, name}), why));
    CHECK(why == "invalid directory entry name");
    CHECK(rejected(encode(DirentDelRec{1, name}), why));
    CHECK(why == "invalid directory entry name");
  }
  // The edges that are valid.
  std::string why;
  CHECK_FALSE(rejected(encode(DirentSetRec{1, 2, 8, std::string(kNameMax, 'a')}), why));
  CHECK_FALSE(rejected(encode(DirentSetRec{1, 2, 8, "..."}), why));
  CHECK_FALSE(rejected(encode(DirentSetRec{1, 2, 8, ".hidden"}), why));
}

TEST_CASE("records: valid_name", "[records]") {
  CHECK(valid_name("a"));
  CHECK(valid_name(std::string(255, 'z')));
  CHECK(valid_name("..."));
  CHECK(valid_name("\xff\xfe"));
  CHECK_FALSE(valid_name(""));
  CHECK_FALSE(valid_name("."));
  CHECK_FALSE(valid_name(".."));
  CHECK_FALSE(valid_name("x/"));
  CHECK_FALSE(valid_name(std::string("\0", 1)));
  CHECK_FALSE(valid_name(std::string(256, 'z')));
}

TEST_CASE("records: xattr limits", "[records]") {
  std::string why;
  SECTION("value of 64 KiB is accepted, one byte more is not") {
    const std::string ok_value(kXattrValueMax, 'v');
    CHECK_FALSE(rejected(encode(XattrSetRec{1, "user.big", ok_value}), why));
    const std::string big(kXattrValueMax + 1, 'v');
    CHECK(rejected(encode(XattrSetRec{1, "user.big", big}), why));
    CHECK(why == "invalid xattr");
  }
  SECTION("empty names") {
    CHECK(rejected(encode(XattrSetRec{1, "", "v"}), why));
    CHECK_FALSE(why.empty());
    CHECK(rejected(encode(XattrDelRec{1, ""}), why));
    CHECK_FALSE(why.empty());
  }
  SECTION("xattr-del name of 256 bytes") {
    std::vector<std::uint8_t> body;
    put<std::uint64_t>(body, 1);
    put_str(body, std::string(kXattrNameMax + 1, 'n'));
    CHECK(rejected(raw(7, body), why));
    CHECK(why == "invalid xattr name");
  }
}

TEST_CASE("records: symlink targets are limited", "[records]") {
  std::string why;
  const std::string ok_target(kSymlinkMax, 't');
  CHECK_FALSE(rejected(encode(InodeRec{2, 1, 0120777, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, ok_target}), why));
  const std::string long_target(kSymlinkMax + 1, 't');
  CHECK(rejected(encode(InodeRec{2, 1, 0120777, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, long_target}), why));
  CHECK(why == "symlink target too long");
}

TEST_CASE("records: inodes without a number or a valid file type are rejected", "[records]") {
  std::string why;
  CHECK(rejected(encode(InodeRec{}), why));
  CHECK_FALSE(why.empty());
  CHECK(rejected(encode(InodeRec{0, 1, 0100644, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, {}}), why));  // ino 0
  CHECK_FALSE(why.empty());
  for (std::uint32_t type : {0u, 0030000u, 0050000u, 0070000u, 0110000u, 0130000u, 0150000u, 0170000u}) {
    INFO("mode " << std::oct << type);
    CHECK(rejected(encode(InodeRec{5, 1, type | 0644, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, {}}), why));
    CHECK_FALSE(why.empty());
    CHECK_FALSE(valid_file_type(type));
  }
  for (std::uint32_t type : {0010000u, 0020000u, 0040000u, 0060000u, 0100000u, 0120000u, 0140000u}) {
    CHECK(valid_file_type(type | 07777));
    CHECK_FALSE(rejected(encode(InodeRec{5, 1, type | 0644, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, {}}), why));
  }
}

TEST_CASE("records: invalid extents are rejected", "[records]") {
  std::string why;
  CHECK(rejected(encode(ExtentSetRec{1, 0, 0, 10, 0}), why));  // empty
  CHECK(why == "invalid extent");
  CHECK(rejected(encode(ExtentSetRec{1, ~0ULL - 5, 10, 0, 0}), why));  // wraps the file
  CHECK(why == "invalid extent");
  CHECK(rejected(encode(ExtentSetRec{1, 0, 10, ~0ULL - 5, 0}), why));  // wraps the device
  CHECK(why == "invalid extent");
  CHECK_FALSE(rejected(encode(ExtentSetRec{1, 1, ~0ULL - 1, 0, 0}), why));  // reaches exactly the end
  CHECK_FALSE(rejected(encode(ExtentSetRec{1, 0, 5, 100, kExtentUnwritten}), why));
  CHECK(rejected(encode(ExtentSetRec{1, 0, 5, 100, 2}), why));  // unknown flag
  CHECK(why == "invalid extent");
  CHECK(rejected(encode(ExtentSetRec{1, 0, 5, 100, 0x80000000u}), why));
  CHECK(why == "invalid extent");
}

TEST_CASE("records: unknown types are rejected", "[records]") {
  for (int type : {0, 13, 14, 100, 255}) {
    std::vector<std::uint8_t> body;
    put<std::uint64_t>(body, 1);
    std::string why;
    INFO("type " << type);
    CHECK(rejected(raw(static_cast<std::uint8_t>(type), body), why));
    CHECK(why.find("unknown record type") != std::string::npos);
  }
  // A bad record after good ones: the good ones were delivered first.
  std::vector<std::uint8_t> b = encode(InodeFreeRec{1});
  auto bad = raw(77, {});
  b.insert(b.end(), bad.begin(), bad.end());
  bool ok;
  std::string why;
  auto out = decode_all(b, ok, why);
  CHECK_FALSE(ok);
  CHECK(out.size() == 1);
  CHECK(why == "unknown record type 77");
}

TEST_CASE("records: random bytes never crash the decoder", "[records][fuzz]") {
  std::mt19937_64 rng(20240601);
  // Seeds: valid encodings of every type, to mutate.
  std::vector<std::vector<std::uint8_t>> seeds = {
      encode(InodeRec{7, 1, 0100644, 0, 0, 1, 0, 10, 1, 2, 3, 4, 0, 0, {}}),
      encode(InodeRec{8, 1, 0120777, 0, 0, 1, 0, 3, 0, 0, 0, 0, 0, 0, "abc"}),
      encode(InodeFreeRec{9}),
      encode(DirentSetRec{1, 7, 8, "file"}),
      encode(DirentDelRec{1, "file"}),
      encode(ExtentSetRec{7, 0, 3, 500, 0}),
      encode(XattrSetRec{7, "user.k", "value"}),
      encode(XattrDelRec{7, "user.k"}),
  };
  std::size_t accepted = 0, refused = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::uint8_t> b;
    switch (i % 4) {
      case 0: {  // pure noise
        b.resize(rng() % 300);
        for (auto& c : b) c = static_cast<std::uint8_t>(rng());
        break;
      }
      case 1: {  // noise with a plausible type byte
        b.resize(1 + rng() % 120);
        for (auto& c : b) c = static_cast<std::uint8_t>(rng());
        b[0] = static_cast<std::uint8_t>(1 + rng() % 7);
        break;
      }
      default: {  // a few valid records with a few bytes flipped, cut or grown
        for (int k = 0, n = 1 + static_cast<int>(rng() % 4); k < n; ++k) {
          const auto& s = seeds[rng() % seeds.size()];
          b.insert(b.end(), s.begin(), s.end());
        }
        for (int k = 0, n = static_cast<int>(rng() % 4); k < n; ++k) b[rng() % b.size()] ^= static_cast<std::uint8_t>(1 + rng() % 255);
        if (rng() % 3 == 0) b.resize(rng() % (b.size() + 1));
        if (rng() % 5 == 0)
          for (int k = 0, n = static_cast<int>(rng() % 16); k < n; ++k) b.push_back(static_cast<std::uint8_t>(rng()));
        break;
      }
    }
    // Decode from a buffer of exactly this size, so ASan sees any overread.
    auto heap = std::make_unique<std::uint8_t[]>(b.size() + 1);
    if (!b.empty()) std::memcpy(heap.get(), b.data(), b.size());
    std::string why;
    std::size_t records = 0;
    bool ok = decode_records(
        std::span<const std::uint8_t>(heap.get(), b.size()),
        [&](const Record& r) {
          ++records;
          // Touch every view so that a dangling one is caught.
          std::visit(
              [](const auto& x) {
                using T = std::decay_t<decltype(x)>;
                std::size_t sum = 0;
                if constexpr (std::is_same_v<T, InodeRec>) {
                  for (char c : x.symlink) sum += static_cast<unsigned char>(c);
                } else if constexpr (std::is_same_v<T, DirentSetRec> || std::is_same_v<T, DirentDelRec> ||
                                     std::is_same_v<T, XattrDelRec>) {
                  for (char c : x.name) sum += static_cast<unsigned char>(c);
                } else if constexpr (std::is_same_v<T, XattrSetRec>) {
                  for (char c : x.name) sum += static_cast<unsigned char>(c);
                  for (char c : x.value) sum += static_cast<unsigned char>(c);
                }
                (void)sum;
              },
              r);
          return true;
        },
        why);
    if (ok) {
      ++accepted;
    } else {
      ++refused;
      if (why.empty()) FAIL("refused without a reason, input " << i);
    }
  }
  CHECK(accepted > 1000);  // the mutations leave plenty valid
  CHECK(refused > 5000);
}

}  // namespace dhfs
