// Small files packed several to a block (PackBlocks, kExtentPacked),
// through the core API: they share one block and read back, across a
// reopen and with fsck clean; every change of a packed file copies its
// bytes out and leaves its neighbours' alone; the block is freed with its
// last file; dedup shares a packed file's bytes; writers in several regions
// work side by side; pack_small=0 turns it off.
#include <fcntl.h>
#include <linux/falloc.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fs/filesystem.h"
#include "fs/pack_blocks.h"
#include "tests/unit/sharing_support.h"
#include "tests/unit/test_support.h"

namespace dhfs {
namespace {

using namespace sharing_test;
using test::kRoot;
using test::pattern;

// Creates `name` holding `content`, written in one piece, then closed.
Ino small_file(FileSystem& fs, std::string_view name, std::string_view content) {
  return test::write_file(fs, kRootIno, name, content);
}

TEST_CASE("packing: small files share a block and read back, also after a reopen", "[packing]") {
  Rig rig;
  std::vector<std::pair<Ino, std::string>> files;
  std::uint64_t bytes = 0;
  for (int i = 0; i < 12; ++i) {
    const std::string data = pattern(1 + static_cast<std::size_t>(i) * 250, 100 + i);  // 1 .. 2751 bytes
    files.emplace_back(small_file(*rig.fs, "f" + std::to_string(i), data), data);
    bytes += data.size();
  }
  // 16.5 KB in 12 files: 12 blocks of their own; packed in order, a new
  // block whenever the next file does not fit the open one (a file never
  // straddles two), 6: {1..1251}, {1501, 1751}, {2001}, {2251}, {2501}, {2751}.
  CHECK(bytes == 16512);
  CHECK(physical_blocks(*rig.fs) == 6);
  const FsStats s = synced(*rig.fs);
  CHECK(s.packed_files == 12);
  CHECK(s.packed_bytes == bytes);
  CHECK(s.pack_blocks == 6);
  CHECK(s.pack_unused_bytes == 6 * kB - bytes);
  for (const auto& [ino, data] : files) {
    CHECK_CONTENT(*rig.fs, ino, data);
    // st_blocks counts the file's own bytes, in 512-byte units.
    CHECK(test::getattr_of(*rig.fs, ino).blocks == (data.size() + 511) / 512);
  }
  rig.reopen();  // fsck clean, the same space used
  for (const auto& [ino, data] : files) CHECK_CONTENT(*rig.fs, ino, data);
  // After the reopen no block is open: the next small file starts one.
  small_file(*rig.fs, "next", "x");
  CHECK(physical_blocks(*rig.fs) == 7);
}

TEST_CASE("packing: a change to a packed file copies its bytes out, its neighbours keep theirs", "[packing]") {
  struct Change {
    const char* what;
    std::function<void(FileSystem&, Ino, std::string&)> apply;
  };
  const std::string extra = pattern(5000, 9);
  const std::vector<Change> changes = {
      {"overwrite inside", [](FileSystem& fs, Ino ino, std::string& m) {
         write_bytes(fs, ino, 10, "XYZ");
         model_write(m, 10, "XYZ");
       }},
      {"append", [](FileSystem& fs, Ino ino, std::string& m) {
         write_bytes(fs, ino, m.size(), "tail");
         model_write(m, m.size(), "tail");
       }},
      {"write past the end", [&](FileSystem& fs, Ino ino, std::string& m) {
         write_bytes(fs, ino, 9000, extra);
         model_write(m, 9000, extra);
       }},
      {"rewrite from 0, longer than a block", [&](FileSystem& fs, Ino ino, std::string& m) {
         write_bytes(fs, ino, 0, extra);
         model_write(m, 0, extra);
       }},
      {"truncate shorter", [](FileSystem& fs, Ino ino, std::string& m) {
         truncate_to(fs, ino, 7);
         m.resize(7);
       }},
      {"truncate shorter, then longer", [](FileSystem& fs, Ino ino, std::string& m) {
         truncate_to(fs, ino, 7);
         truncate_to(fs, ino, 6000);
         m.resize(7);
         m.resize(6000, '\0');
       }},
      {"truncate to zero, then a new small file", [](FileSystem& fs, Ino ino, std::string& m) {
         truncate_to(fs, ino, 0);
         write_bytes(fs, ino, 0, "again");
         m = "again";
       }},
      {"punch inside", [](FileSystem& fs, Ino ino, std::string& m) {
         punch(fs, ino, 5, 20);
         model_punch(m, 5, 20);
       }},
      {"punch the whole block", [](FileSystem& fs, Ino ino, std::string& m) {
         punch(fs, ino, 0, kB);
         model_punch(m, 0, kB);
       }},
      {"fallocate beyond the end", [](FileSystem& fs, Ino ino, std::string& m) {
         REQUIRE(fs.fallocate(ino, 0, 0, 3 * kB) == 0);
         m.resize(3 * kB, '\0');
       }},
      {"fallocate keeping the size, then append", [](FileSystem& fs, Ino ino, std::string& m) {
         REQUIRE(fs.fallocate(ino, FALLOC_FL_KEEP_SIZE, 0, 8 * kB) == 0);
         write_bytes(fs, ino, m.size(), "more");
         model_write(m, m.size(), "more");
       }},
      {"copy_file_range into it", [&](FileSystem& fs, Ino ino, std::string& m) {
         const Ino src = test::write_file(fs, kRootIno, "src", extra);
         CHECK(cfr(fs, src, 0, ino, 4, 3000) == 3000);
         model_copy(extra, 0, m, 4, 3000);
       }},
  };
  for (const Change& c : changes) {
    DYNAMIC_SECTION(c.what) {
      Rig rig;
      const std::string a = pattern(700, 1), b0 = pattern(1000, 2), c0 = pattern(900, 3);
      const Ino ia = small_file(*rig.fs, "a", a);
      const Ino ib = small_file(*rig.fs, "b", b0);
      const Ino ic = small_file(*rig.fs, "c", c0);
      REQUIRE(physical_blocks(*rig.fs) == 1);  // all three in one block
      std::string b = b0;
      c.apply(*rig.fs, ib, b);
      auto check_all = [&] {
        CHECK_CONTENT(*rig.fs, ib, b);
        CHECK_CONTENT(*rig.fs, ia, a);
        CHECK_CONTENT(*rig.fs, ic, c0);
      };
      check_all();
      rig.reopen();
      check_all();
      // The changed file is a file like any other now.
      write_bytes(*rig.fs, ib, 1, "Q");
      model_write(b, 1, "Q");
      CHECK_CONTENT(*rig.fs, ib, b);
      CHECK_CONTENT(*rig.fs, ia, a);
    }
  }
}

TEST_CASE("packing: the block goes with its last file, and an open one takes the next files", "[packing]") {
  Rig rig;
  const Ino a = small_file(*rig.fs, "a", pattern(100, 1));
  small_file(*rig.fs, "b", pattern(200, 2));
  CHECK(physical_blocks(*rig.fs) == 1);
  CHECK(synced(*rig.fs).pack_unused_bytes == kB - 300);
  REQUIRE(rig.fs->unlink(kRootIno, "a") == 0);
  // a's 100 bytes are not reused while the block lives.
  CHECK(synced(*rig.fs).pack_unused_bytes == kB - 200);
  CHECK(synced(*rig.fs).packed_files == 1);
  REQUIRE(rig.fs->unlink(kRootIno, "b") == 0);
  CHECK(physical_blocks(*rig.fs) == 0);
  CHECK(synced(*rig.fs).pack_blocks == 0);
  (void)a;
  // The block stayed open (allocated, no file in it): the next file goes
  // into it after the bytes of the two gone ones.
  const std::uint64_t free_before = rig.fs->allocator().free_blocks();
  const std::string c = pattern(300, 3);
  const Ino ic = small_file(*rig.fs, "c", c);
  CHECK(physical_blocks(*rig.fs) == 1);
  CHECK(rig.fs->allocator().free_blocks() == free_before);
  CHECK_CONTENT(*rig.fs, ic, c);
  rig.reopen();
  CHECK_CONTENT(*rig.fs, ic, c);
  // A full block is closed: files keep coming into new ones, and deleting
  // every file returns every block.
  for (int i = 0; i < 40; ++i) small_file(*rig.fs, "g" + std::to_string(i), pattern(1500, 10 + i));
  CHECK(physical_blocks(*rig.fs) == 1 + 20);  // two 1500-byte files a block
  for (int i = 0; i < 40; ++i) REQUIRE(rig.fs->unlink(kRootIno, "g" + std::to_string(i)) == 0);
  REQUIRE(rig.fs->unlink(kRootIno, "c") == 0);
  CHECK(physical_blocks(*rig.fs) == 0);
  const FsckReport r = rig.reopen();
  CHECK(r.file_blocks == 0);
}

TEST_CASE("packing: a duplicate of a packed file shares its bytes, a change copies them out", "[packing]") {
  Rig rig;
  const std::string data = pattern(777, 5);
  const Ino a = small_file(*rig.fs, "a", data);
  small_file(*rig.fs, "other", pattern(500, 6));
  const Ino b = small_file(*rig.fs, "b", data);  // never written: shares a's packed bytes
  CHECK(physical_blocks(*rig.fs) == 1);
  CHECK(synced(*rig.fs).saved_blocks == 2);  // three files reference the one block
  CHECK_CONTENT(*rig.fs, b, data);
  std::string changed = data;
  changed[400] ^= 0x33;
  write_bytes(*rig.fs, b, 400, changed.substr(400, 1));
  CHECK_CONTENT(*rig.fs, b, changed);
  CHECK_CONTENT(*rig.fs, a, data);
  rig.reopen();
  CHECK_CONTENT(*rig.fs, b, changed);
  CHECK_CONTENT(*rig.fs, a, data);
  // A copy made after the reopen finds the packed file by its persisted hash.
  const Ino c = small_file(*rig.fs, "c", data);
  CHECK(physical_blocks(*rig.fs) == 2);  // the block, and b's own
  CHECK_CONTENT(*rig.fs, c, data);
  // Truncated shorter, a sharing file keeps the packed bytes it still
  // holds: the same offset, fewer bytes (fsck accepts it).
  truncate_to(*rig.fs, c, 300);
  CHECK_CONTENT(*rig.fs, c, data.substr(0, 300));
  rig.reopen();
  CHECK_CONTENT(*rig.fs, c, data.substr(0, 300));
  CHECK_CONTENT(*rig.fs, a, data);
  // The block holds a's 777 bytes (c's 300 are their start) and other's 500.
  const FsStats s = synced(*rig.fs);
  CHECK(s.packed_files == 3);
  CHECK(s.pack_blocks == 1);
  CHECK(s.pack_unused_bytes == kB - 777 - 500);
}

TEST_CASE("packing: pack_small=0 gives every small file a block of its own", "[packing]") {
  FsOptions o = Rig::exact_cow();
  o.pack_small_bytes = 0;
  Rig rig(256 * kMiB, o);
  for (int i = 0; i < 5; ++i) small_file(*rig.fs, "f" + std::to_string(i), pattern(100, 20 + i));
  CHECK(physical_blocks(*rig.fs) == 5);
}

TEST_CASE("packing: files larger than the limit, or written in pieces, are not packed", "[packing]") {
  Rig rig;
  small_file(*rig.fs, "big", pattern(3073, 1));  // over the 3 KiB default
  CHECK(physical_blocks(*rig.fs) == 1);
  small_file(*rig.fs, "small", pattern(100, 2));
  CHECK(physical_blocks(*rig.fs) == 2);
  // Written from offset 100 first: not a whole file in one piece.
  const Ino p = create_empty(*rig.fs, kRootIno, "pieces");
  write_bytes(*rig.fs, p, 100, "later");
  write_bytes(*rig.fs, p, 0, "first");
  std::string m;
  model_write(m, 100, "later");
  model_write(m, 0, "first");
  CHECK(physical_blocks(*rig.fs) == 3);
  CHECK_CONTENT(*rig.fs, p, m);
  rig.reopen();
  CHECK_CONTENT(*rig.fs, p, m);
}

TEST_CASE("packing: writers in several regions create, change and delete small files side by side", "[packing]") {
  // Each writer works in its own directory, two of them container regions
  // (their own pack blocks) and two in the global space (one shared open
  // block); every file's bytes are checked at the end, and after a reopen
  // with fsck clean.
  Rig rig(512 * kMiB);
  constexpr int kWriters = 4, kSteps = 400;
  std::vector<Ino> dirs;
  for (int t = 0; t < kWriters; ++t) {
    Attr a;
    REQUIRE(rig.fs->mkdir(kRootIno, "w" + std::to_string(t), 0755, kRoot, &a) == 0);
    if (t < 2) REQUIRE(rig.fs->create_region(a.ino, 4 * kMiB) == 0);
    dirs.push_back(a.ino);
    rig.fs->forget(a.ino, 1);
  }
  std::vector<std::map<std::string, std::pair<Ino, std::string>>> models(kWriters);
  std::atomic<int> failures{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kWriters; ++t)
      threads.emplace_back([&, t] {
        FileSystem& fs = *rig.fs;
        auto& model = models[t];
        std::mt19937_64 rng(1000 + t);
        auto fail = [&] { ++failures; };
        for (int step = 0; step < kSteps; ++step) {
          const std::string name = "f" + std::to_string(rng() % 60);
          auto it = model.find(name);
          const int what = static_cast<int>(rng() % 10);
          if (it == model.end()) {  // create, written whole
            const std::string data = pattern(1 + rng() % 3000, rng());
            Attr a;
            if (fs.create(dirs[t], name, 0644, O_WRONLY | O_CREAT, kRoot, &a) != 0) {
              fail();
              continue;
            }
            if (fs.write(a.ino, 0, as_bytes(data)) != static_cast<ssize_t>(data.size())) fail();
            fs.release(a.ino);
            fs.forget(a.ino, 1);
            model[name] = {a.ino, data};
          } else if (what < 4) {  // delete
            if (fs.unlink(dirs[t], name) != 0) fail();
            model.erase(it);
          } else if (what < 6) {  // append: copied out of its pack block
            const std::string more = pattern(1 + rng() % 200, rng());
            auto& [ino, data] = it->second;
            if (fs.write(ino, data.size(), as_bytes(more)) != static_cast<ssize_t>(more.size())) fail();
            data += more;
          } else if (what < 7) {  // truncate shorter: stays packed
            auto& [ino, data] = it->second;
            SetAttr sa;
            sa.valid = SetAttr::kSize;
            sa.size = data.size() / 2;
            Attr out;
            if (fs.setattr(ino, sa, &out) != 0) fail();
            data.resize(data.size() / 2);
          } else {  // read back now
            const auto& [ino, data] = it->second;
            AlignedBuffer scratch;
            std::span<const std::byte> got;
            if (fs.read(ino, 0, data.size() + 100, scratch, &got) != 0 || got.size() != data.size() ||
                std::memcmp(got.data(), data.data(), data.size()) != 0)
              fail();
          }
        }
      });
  }
  REQUIRE(failures == 0);
  auto check_all = [&] {
    for (const auto& model : models)
      for (const auto& [name, f] : model) CHECK_CONTENT(*rig.fs, f.first, f.second);
  };
  check_all();
  CHECK(synced(*rig.fs).packed_files > 0);
  rig.reopen();
  check_all();
}

TEST_CASE("PackBlocks: open blocks that lose their last file are kept out of the frees", "[packing]") {
  PackBlocks packs;
  CHECK(packs.open(1, 100).empty());
  CHECK(packs.open(2, 200).empty());
  packs.current(1)->referenced = true;
  packs.current(2)->referenced = true;
  // A free of [99, 102) and one of [200, 201): the open blocks stay.
  std::vector<Extent> to_free{{5, 1}, {99, 3}, {200, 1}};
  packs.keep_open(to_free, 1);
  CHECK(to_free == std::vector<Extent>{{5, 1}, {99, 1}, {101, 1}});
  CHECK_FALSE(packs.current(1)->referenced);
  CHECK_FALSE(packs.current(2)->referenced);
  // Replacing region 1's block hands back the old one, unreferenced, to
  // free; a referenced one is just forgotten.
  CHECK(packs.open(1, 101) == std::vector<BlockNo>{100});
  packs.current(1)->referenced = true;
  CHECK(packs.open(1, 102).empty());
  CHECK(packs.find(101) == nullptr);
  // At most kMaxOpen blocks stay open.
  for (RegionId r = 10; r < 10 + PackBlocks::kMaxOpen; ++r) packs.open(r, 1000 + r);
  CHECK(packs.open_count() == PackBlocks::kMaxOpen);
  // Bytes go in order; a file that does not fit needs another block.
  PackBlocks::Block& b = *packs.current(10);
  const std::string x(4000, 'x');
  CHECK(PackBlocks::append(b, reinterpret_cast<const std::byte*>(x.data()), x.size()) == 0);
  CHECK(PackBlocks::fits(b, 96));
  CHECK_FALSE(PackBlocks::fits(b, 97));
}

}  // namespace
}  // namespace dhfs
