// libFuzzer target: the in-memory directory (fs/directory.cc) that every
// kDirentSet/kDirentDel record is applied to, driven by add/replace/remove
// and listings (with cookies held open across changes) decoded from the
// input, compared with a std::map. A listing in progress must return every
// name that existed, untouched, throughout it exactly once (POSIX leaves
// names added or removed meanwhile open: those may come twice or not).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <string_view>

#include "fs/directory.h"

using namespace dhfs;

namespace {
[[noreturn]] void fail(const char* what, std::string_view name) {
  std::fprintf(stderr, "directory: %s (%.*s)\n", what, static_cast<int>(name.size()), name.data());
  std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Directory dir;
  std::map<std::string, Ino> model;
  std::uint64_t cookie = 0;  // of a listing in progress
  bool listing = false;
  std::set<std::string> listed;  // names a listing in progress returned
  std::set<std::string> stable;  // names present since the listing began
  for (std::size_t i = 0; i + 2 <= size; i += 2) {
    const std::uint8_t op = data[i], arg = data[i + 1];
    // Names from a small set so that operations collide; some long.
    std::string name = "n" + std::to_string(arg % 97);
    if (arg >= 250) name.append(200, static_cast<char>('a' + arg % 26));
    const Ino ino = 2 + arg;
    switch (op % 6) {
      case 0: {
        bool added = dir.add(name, ino, 8);
        if (added != (model.count(name) == 0)) fail("add disagrees", name);
        if (added) model[name] = ino;
        break;
      }
      case 1: {
        bool replaced = dir.replace(name, ino + 1, 8);
        if (replaced != (model.count(name) != 0)) fail("replace disagrees", name);
        if (replaced) model[name] = ino + 1;
        break;
      }
      case 2: {
        bool removed = dir.remove(name);
        if (removed != (model.erase(name) != 0)) fail("remove disagrees", name);
        stable.erase(name);
        break;
      }
      case 3: {
        auto e = dir.lookup(name);
        auto it = model.find(name);
        if (e.has_value() != (it != model.end())) fail("lookup disagrees", name);
        if (e && (e->ino != it->second || e->name != name)) fail("lookup found another entry", name);
        break;
      }
      case 4: {  // step a listing: open it, or take a few entries
        if (!listing) {
          dir.open_listing();
          listing = true;
          cookie = 0;
          listed.clear();
          stable.clear();
          for (const auto& kv : model) stable.insert(kv.first);
        }
        int want = arg % 8 + 1;
        bool more = false;
        dir.list(cookie, [&](const DirEntry& e, std::uint64_t next) {
          if (want-- == 0) {
            more = true;
            return false;
          }
          if (e.name.empty()) fail("listed a tombstone", e.name);
          if (!listed.insert(std::string(e.name)).second && stable.count(std::string(e.name))) fail("listed twice", e.name);
          if (next <= cookie) fail("cookie went backwards", e.name);
          cookie = next;
          return true;
        });
        if (!more) {
          for (const auto& n : stable)
            if (!listed.count(n)) fail("listing missed a name present throughout", n);
          dir.close_listing();
          listing = false;
        }
        break;
      }
      case 5: {  // a full listing from the start must show exactly the model
        std::map<std::string, Ino> seen;
        dir.list(0, [&](const DirEntry& e, std::uint64_t) {
          if (!seen.emplace(e.name, e.ino).second) fail("full listing repeats", e.name);
          return true;
        });
        if (seen != model) fail("full listing differs", name);
        break;
      }
    }
    if (dir.size() != model.size()) fail("size differs", name);
  }
  if (listing) dir.close_listing();
  return 0;
}
