// Tests of fs/directory.h: the in-memory entries of one directory.
#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "fs/directory.h"
#include "tests/unit/model_steps.h"

namespace dhfs {
namespace {

struct Listed {
  std::string name;
  Ino ino;
  std::uint64_t next;
};

std::vector<Listed> list_all(const Directory& d, std::uint64_t from = 0) {
  std::vector<Listed> out;
  d.list(from, [&](const DirEntry& e, std::uint64_t next) {
    out.push_back({std::string(e.name), e.ino, next});
    return true;
  });
  return out;
}

// Takes up to `page` names from `cookie` on and moves `cookie` past the
// last one taken (what a readdir call does).
std::vector<std::string> take_page(const Directory& d, std::uint64_t& cookie,
                                   std::size_t page = std::numeric_limits<std::size_t>::max()) {
  std::vector<std::string> out;
  d.list(cookie, [&](const DirEntry& e, std::uint64_t next) {
    if (out.size() == page) return false;
    out.emplace_back(e.name);
    cookie = next;
    return true;
  });
  return out;
}

// Lists in pages of `page` entries, resuming from the cookie after the last
// entry taken.
std::vector<std::string> list_paged(const Directory& d, std::size_t page) {
  std::vector<std::string> out;
  std::uint64_t cookie = 0;
  while (true) {
    const std::vector<std::string> got = take_page(d, cookie, page);
    out.insert(out.end(), got.begin(), got.end());
    if (got.size() < page) break;
  }
  return out;
}

std::string name_of(std::size_t i) { return "entry-" + std::to_string(i); }

}  // namespace

TEST_CASE("directory: add, lookup, replace, remove", "[directory]") {
  Directory d;
  CHECK(d.empty());
  CHECK_FALSE(d.lookup("a"));
  CHECK_FALSE(d.remove("a"));
  CHECK_FALSE(d.replace("a", 5, 8));

  CHECK(d.add("a", 10, 8));
  CHECK(d.add("b", 11, 4));
  CHECK(d.size() == 2);
  CHECK_FALSE(d.empty());
  auto a = d.lookup("a");
  REQUIRE(a);
  CHECK(a->name == "a");
  CHECK(a->ino == 10);
  CHECK(a->dtype == 8);

  SECTION("duplicates are rejected and change nothing") {
    CHECK_FALSE(d.add("a", 99, 4));
    CHECK(d.lookup("a")->ino == 10);
    CHECK(d.size() == 2);
  }
  SECTION("replace points the name elsewhere") {
    CHECK(d.replace("a", 20, 10));
    CHECK(d.lookup("a")->ino == 20);
    CHECK(d.lookup("a")->dtype == 10);
    CHECK(d.size() == 2);
  }
  SECTION("remove, then the name is free again") {
    CHECK(d.remove("a"));
    CHECK_FALSE(d.lookup("a"));
    CHECK_FALSE(d.remove("a"));
    CHECK(d.size() == 1);
    CHECK(d.lookup("b")->ino == 11);
    CHECK(d.add("a", 30, 8));
    CHECK(d.lookup("a")->ino == 30);
  }
  SECTION("removing everything empties the directory") {
    CHECK(d.remove("a"));
    CHECK(d.remove("b"));
    CHECK(d.empty());
    CHECK(list_all(d).empty());
    CHECK(d.add("c", 1, 8));
    CHECK(d.lookup("c"));
  }
  SECTION("names are compared byte for byte") {
    CHECK_FALSE(d.lookup("A"));
    CHECK_FALSE(d.lookup("a "));
    std::string with_nul("a\0", 2);
    CHECK_FALSE(d.lookup(with_nul));
  }
}

TEST_CASE("directory: lists in creation order with resumable cookies", "[directory]") {
  Directory d;
  for (std::size_t i = 0; i < 10; ++i) REQUIRE(d.add(name_of(i), 100 + i, 8));
  auto all = list_all(d);
  REQUIRE(all.size() == 10);
  for (std::size_t i = 0; i < 10; ++i) {
    CHECK(all[i].name == name_of(i));
    CHECK(all[i].ino == 100 + i);
  }
  // Resuming from each cookie gives exactly the rest.
  for (std::size_t i = 0; i < 10; ++i) {
    auto rest = list_all(d, all[i].next);
    REQUIRE(rest.size() == 9 - i);
    if (!rest.empty()) CHECK(rest.front().name == name_of(i + 1));
  }
  CHECK(list_all(d, 1000).empty());
  // for_each sees the same entries.
  std::vector<std::string> seen;
  d.for_each([&](const DirEntry& e) { seen.push_back(std::string(e.name)); });
  CHECK(seen.size() == 10);
  CHECK(list_paged(d, 3).size() == 10);
}

TEST_CASE("directory: 100k entries", "[directory]") {
  Directory d;
  constexpr std::size_t kN = 100000;
  for (std::size_t i = 0; i < kN; ++i) REQUIRE(d.add(name_of(i), i + 2, 8));
  CHECK(d.size() == kN);
  for (std::size_t i = 0; i < kN; i += 7) {
    auto e = d.lookup(name_of(i));
    REQUIRE(e);
    REQUIRE(e->ino == i + 2);
  }
  CHECK_FALSE(d.lookup(name_of(kN)));
  CHECK_FALSE(d.add(name_of(kN / 2), 1, 8));

  // Paged listing sees every entry exactly once.
  auto names = list_paged(d, 1000);
  REQUIRE(names.size() == kN);
  std::set<std::string> unique(names.begin(), names.end());
  CHECK(unique.size() == kN);

  // Remove every other entry (compaction runs along the way: no listing open).
  for (std::size_t i = 0; i < kN; i += 2) REQUIRE(d.remove(name_of(i)));
  CHECK(d.size() == kN / 2);
  for (std::size_t i = 0; i < kN; ++i) {
    auto e = d.lookup(name_of(i));
    if (i % 2) {
      REQUIRE(e);
      REQUIRE(e->ino == i + 2);
    } else {
      REQUIRE_FALSE(e);
    }
  }
  CHECK(list_paged(d, 777).size() == kN / 2);
  for (std::size_t i = 1; i < kN; i += 2) REQUIRE(d.remove(name_of(i)));
  CHECK(d.empty());
  CHECK(list_all(d).empty());
}

TEST_CASE("directory: removal during an open listing keeps cookies stable", "[directory]") {
  Directory d;
  constexpr std::size_t kN = 1000;
  for (std::size_t i = 0; i < kN; ++i) REQUIRE(d.add(name_of(i), i + 2, 8));
  d.open_listing();

  // Read the first page.
  std::uint64_t cookie = 0;
  const std::vector<std::string> got = take_page(d, cookie, 100);
  REQUIRE(got.size() == 100);

  // Remove most entries, both already listed and not yet listed, and add
  // new ones. Without the open listing this would compact and renumber.
  for (std::size_t i = 0; i < kN; ++i)
    if (i % 10 != 0) REQUIRE(d.remove(name_of(i)));
  for (std::size_t i = kN; i < kN + 50; ++i) REQUIRE(d.add(name_of(i), i + 2, 8));

  // Continue from the cookie: exactly the survivors after the first page,
  // then the new entries; nothing listed twice, nothing skipped.
  std::uint64_t resumed = cookie;  // (the sections below resume from `cookie` again)
  const std::vector<std::string> rest = take_page(d, resumed);
  std::vector<std::string> expect;
  for (std::size_t i = 100; i < kN; i += 10) expect.push_back(name_of(i));
  for (std::size_t i = kN; i < kN + 50; ++i) expect.push_back(name_of(i));
  CHECK(rest == expect);

  // Lookups stay right while tombstones pile up.
  CHECK(d.lookup(name_of(500))->ino == 502);
  CHECK_FALSE(d.lookup(name_of(501)));

  SECTION("compaction after the listing closes") {
    d.close_listing();
    auto all = list_all(d);
    REQUIRE(all.size() == kN / 10 + 50);
    // Compacted: cookies are dense again (the next cookie of the last entry
    // is the number of live entries).
    CHECK(all.back().next == all.size());
    for (std::size_t i = 0; i < kN; i += 10) CHECK(d.lookup(name_of(i))->ino == i + 2);
    CHECK(d.lookup(name_of(kN + 49))->ino == kN + 51);
  }
  SECTION("two listings: compaction waits for the last one") {
    d.open_listing();
    d.close_listing();
    auto again = list_all(d, cookie);
    CHECK(again.size() == expect.size());
    d.close_listing();
    CHECK(list_all(d).back().next == kN / 10 + 50);
  }
  SECTION("extra closes are harmless") {
    d.close_listing();
    d.close_listing();
    CHECK(d.size() == kN / 10 + 50);
  }
}

TEST_CASE("directory: matches a std::map model under random operations", "[directory][random]") {
  std::mt19937_64 rng(GENERATE(11u, 12u));
  Directory d;
  std::map<std::string, std::pair<Ino, std::uint8_t>> model;
  int open = 0;
  // Listing in progress: its cookie and the names it returned.
  std::uint64_t cookie = 0;
  std::set<std::string> listed;
  std::set<std::string> at_open;  // live when the listing started, never removed since
  for (int op = 0; op < test::model_steps(30000); ++op) {
    std::string name = "n" + std::to_string(rng() % 3000);
    switch (rng() % 10) {
      case 0:
      case 1:
      case 2:
      case 3: {
        Ino ino = rng() % 100000 + 2;
        auto dtype = static_cast<std::uint8_t>(rng() % 16);
        bool added = d.add(name, ino, dtype);
        REQUIRE(added == (model.count(name) == 0));
        if (added) model[name] = {ino, dtype};
        break;
      }
      case 4:
      case 5:
      case 6: {
        bool removed = d.remove(name);
        REQUIRE(removed == (model.count(name) == 1));
        model.erase(name);
        at_open.erase(name);
        // Removed and added again during a listing, a name may be listed
        // twice (POSIX leaves it unspecified).
        listed.erase(name);
        break;
      }
      case 7: {
        Ino ino = rng() % 100000 + 2;
        bool replaced = d.replace(name, ino, 8);
        REQUIRE(replaced == (model.count(name) == 1));
        if (replaced) model[name] = {ino, 8};
        break;
      }
      case 8: {
        auto e = d.lookup(name);
        auto it = model.find(name);
        REQUIRE(e.has_value() == (it != model.end()));
        if (e) {
          REQUIRE(e->ino == it->second.first);
          REQUIRE(e->dtype == it->second.second);
        }
        break;
      }
      case 9: {
        if (open == 0) {
          d.open_listing();
          open = 1;
          cookie = 0;
          listed.clear();
          at_open.clear();
          for (const auto& [n, v] : model) at_open.insert(n);
        } else if (rng() % 4 == 0) {
          // Finish the listing: every entry live since it began was listed
          // exactly once.
          d.list(cookie, [&](const DirEntry& e, std::uint64_t next) {
            REQUIRE(listed.insert(std::string(e.name)).second);
            cookie = next;
            return true;
          });
          for (const std::string& n : at_open) REQUIRE(listed.count(n) == 1);
          d.close_listing();
          open = 0;
        } else {
          // Take a page.
          std::size_t taken = 0;
          d.list(cookie, [&](const DirEntry& e, std::uint64_t next) {
            if (taken == 20) return false;
            REQUIRE(model.count(std::string(e.name)) == 1);
            REQUIRE(listed.insert(std::string(e.name)).second);
            cookie = next;
            ++taken;
            return true;
          });
        }
        break;
      }
    }
    REQUIRE(d.size() == model.size());
  }
  if (open) d.close_listing();
  // Final full comparison.
  std::map<std::string, std::pair<Ino, std::uint8_t>> seen;
  for (const auto& e : list_all(d)) seen[e.name] = {e.ino, d.lookup(e.name)->dtype};
  CHECK(seen == model);
}

TEST_CASE("directory: names move when removals leave dead space, cookies and lookups stay", "[directory]") {
  // Names live back to back in one string; removing many long names
  // squeezes the string, also while a listing is open (entries keep their
  // index, so cookies do not change).
  auto long_name = [](std::size_t i) { return std::string(200, static_cast<char>('a' + i % 26)) + std::to_string(i); };
  Directory d;
  constexpr std::size_t kN = 400;
  for (std::size_t i = 0; i < kN; ++i) REQUIRE(d.add(long_name(i), i + 2, 8));
  d.open_listing();
  std::uint64_t cookie = 0;
  std::vector<std::string> got = take_page(d, cookie, 50);
  for (std::size_t i = 0; i < kN; ++i)
    if (i % 4 != 0) REQUIRE(d.remove(long_name(i)));  // 60 KiB of dead names: squeezed
  const std::vector<std::string> rest = take_page(d, cookie);
  got.insert(got.end(), rest.begin(), rest.end());
  std::vector<std::string> want;
  for (std::size_t i = 0; i < kN; ++i)
    if (i < 50 || i % 4 == 0) want.push_back(long_name(i));
  CHECK(got == want);
  d.close_listing();
  for (std::size_t i = 0; i < kN; ++i) {
    auto e = d.lookup(long_name(i));
    REQUIRE(e.has_value() == (i % 4 == 0));
    if (e) {
      CHECK(e->name == long_name(i));
      CHECK(e->ino == i + 2);
    }
  }
  // A 255-byte name, the longest a directory takes.
  const std::string longest(255, 'z');
  REQUIRE(d.add(longest, 7, 4));
  CHECK(d.lookup(longest)->name == longest);
  CHECK(d.size() == kN / 4 + 1);
}

}  // namespace dhfs
