// Container regions through the mount and dhfsctl: a docker-like tree gets
// one region per layer directory, files written below a layer lie inside its
// region, `rm -rf` of a layer returns its space and ends its region,
// `dhfsctl region create/show` work, and dhfsctl's errors are one line with
// the documented exit codes.
#include <fcntl.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <cstdlib>
#include <string>
#include <vector>

#include "dhfsctl_support.h"
#include "fixture.h"

namespace dhfs_test {
namespace {

constexpr std::uint64_t kMiB = 1ULL << 20;

// The objects of the "regions" array of `dhfsctl --json regions` (flat
// objects: no braces inside them).
std::vector<std::string> json_regions(const std::string& json) {
  std::vector<std::string> out;
  auto at = json.find("\"regions\":[");
  REQUIRE(at != std::string::npos);
  for (at = json.find('{', at); at != std::string::npos; at = json.find('{', at + 1)) {
    auto end = json.find('}', at);
    REQUIRE(end != std::string::npos);
    out.push_back(json.substr(at, end - at + 1));
  }
  return out;
}

// root path -> region object.
std::map<std::string, std::string> regions_by_root(const MountedFs& fs) {
  std::map<std::string, std::string> out;
  for (const std::string& r : json_regions(ctl_json({"regions", fs.root()}))) out[json_field(r, "root")] = r;
  return out;
}

std::uint64_t free_bytes(const MountedFs& fs) {
  struct statfs sf {};
  SYS(::statfs(fs.root().c_str(), &sf));
  return static_cast<std::uint64_t>(sf.f_bfree) * static_cast<std::uint64_t>(sf.f_frsize);
}

// One line on the output (dhfsctl's errors go to stderr, captured with stdout).
bool one_line(const std::string& out) {
  return !out.empty() && out.back() == '\n' && std::count(out.begin(), out.end(), '\n') == 1;
}

}  // namespace

TEST_CASE("regions: docker layer directories get regions, rm -rf of a layer returns its space", "[regions][dhfs]") {
  DHFS_ONLY_STRICT();
  MountedFs fs;
  mkdirs(fs, "overlay2/b/diff");
  mkdirs(fs, "overlay2/l");
  SYS(::symlink("../b/diff", fs.path("overlay2/l/SHORTB").c_str()));
  ctl_sync(fs);
  const std::uint64_t free0 = free_bytes(fs);
  mkdirs(fs, "overlay2/a/diff/usr/lib");
  mkdirs(fs, "overlay2/a/work/work");

  auto regions = regions_by_root(fs);
  {
    std::vector<std::string> roots;
    for (const auto& [root, obj] : regions) roots.push_back(root);
    CHECK(roots == std::vector<std::string>{"/overlay2/a", "/overlay2/b"});
  }
  REQUIRE(regions.count("/overlay2/a"));
  const std::uint64_t id_a = json_u64(regions["/overlay2/a"], "id");
  CHECK(json_u64(regions["/overlay2/a"], "reserved_bytes") == 64 * kMiB);
  CHECK(json_u64(regions["/overlay2/a"], "used_bytes") == 0);

  // A file written under a lies wholly inside a's region.
  const std::string lib = fs.path("overlay2/a/diff/usr/lib/libbig.so");
  write_durable(lib, random_bytes(24 * kMiB, 42));
  write_durable(fs.path("overlay2/a/work/work/tmp"), random_bytes(kMiB, 43));
  const std::string frag = ctl_json({"frag", lib});
  INFO("frag: " << frag);
  CHECK(json_u64(frag, "region") == id_a);
  CHECK(json_field(frag, "in_region_fraction") == "1.0000");
  CHECK(json_u64(frag, "mapped_bytes") == 24 * kMiB);
  const std::string frag_work = ctl_json({"frag", fs.path("overlay2/a/work/work/tmp")});
  CHECK(json_u64(frag_work, "region") == id_a);
  CHECK(json_field(frag_work, "in_region_fraction") == "1.0000");
  CHECK(json_u64(regions_by_root(fs)["/overlay2/a"], "used_bytes") == 25 * kMiB);
  // region show from anywhere below the root.
  const std::string shown = ctl_json({"region", "show", fs.path("overlay2/a/diff/usr")});
  CHECK(json_field(shown, "root") == "/overlay2/a");
  CHECK(json_u64(shown, "id") == id_a);
  const std::uint64_t free1 = free_bytes(fs);
  CHECK(free0 - free1 >= 25 * kMiB);

  // rm -rf of the layer: space back, region gone.
  RunResult rm = run({"/bin/rm", "-rf", fs.path("overlay2/a")});
  INFO(rm.output);
  REQUIRE(rm.exit_code() == 0);
  ctl_sync(fs);
  const std::uint64_t free2 = free_bytes(fs);
  INFO("f_bfree bytes: before the layer " << free0 << ", with it " << free1 << ", after rm -rf " << free2);
  CHECK(free2 + kMiB >= free0);
  CHECK(free2 <= free0 + kMiB);
  regions = regions_by_root(fs);
  CHECK(regions.size() == 1);
  CHECK(regions.count("/overlay2/b") == 1);
  CHECK(json_u64(ctl_json({"df", fs.root()}), "regions") == 1);

  // A new layer with the same name is a new region.
  mkdirs(fs, "overlay2/a/diff");
  regions = regions_by_root(fs);
  REQUIRE(regions.count("/overlay2/a"));
  CHECK(json_u64(regions["/overlay2/a"], "id") != id_a);
  fs.remount();
  CHECK(regions_by_root(fs).size() == 2);
}

TEST_CASE("regions: dhfsctl region create and show", "[regions][dhfs]") {
  DHFS_ONLY_STRICT();
  MountedFs fs;
  mkdirs(fs, "custom/sub");
  write_durable(fs.path("custom/sub/before"), random_bytes(kMiB, 1));
  RunResult created = ctl({"region", "create", fs.path("custom"), "--size", "32M"});
  INFO(created.output);
  REQUIRE(created.exit_code() == 0);
  const std::string shown = ctl_json({"region", "show", fs.path("custom")});
  INFO(shown);
  CHECK(json_u64(shown, "reserved_bytes") == 32 * kMiB);
  CHECK(json_field(shown, "root") == "/custom");
  // Everything below follows, new data lands inside.
  CHECK(json_field(ctl_json({"region", "show", fs.path("custom/sub/before")}), "root") == "/custom");
  write_durable(fs.path("custom/sub/after"), random_bytes(4 * kMiB, 2));
  const std::string frag = ctl_json({"frag", fs.path("custom/sub/after")});
  CHECK(json_u64(frag, "region") == json_u64(shown, "id"));
  CHECK(json_field(frag, "in_region_fraction") == "1.0000");
  // Human output names the root.
  RunResult human = ctl({"region", "show", fs.path("custom")});
  CHECK(human.exit_code() == 0);
  CHECK(human.output.find("/custom") != std::string::npos);
  // A second create on the same directory fails with one line.
  RunResult again = ctl({"region", "create", fs.path("custom")});
  INFO(again.output);
  CHECK(again.exit_code() == 1);
  CHECK(one_line(again.output));

  fs.remount();
  const std::string after = ctl_json({"region", "show", fs.path("custom/sub")});
  CHECK(json_u64(after, "reserved_bytes") == 32 * kMiB);
  CHECK(json_u64(after, "used_bytes") == 4 * kMiB);
}

TEST_CASE("regions: dhfsctl errors are one line with exit codes 1 and 2", "[regions][dhfs]") {
  DHFS_ONLY_STRICT();
  MountedFs fs;
  mkdirs(fs, "overlay2/l");
  mkdirs(fs, "plain");

  SECTION("region show outside any region") {
    for (const std::string& p : {fs.path("overlay2/l"), fs.root(), fs.path("plain")}) {
      RunResult r = ctl({"region", "show", p});
      INFO(p << ": " << r.output);
      CHECK(r.exit_code() == 1);
      CHECK(one_line(r.output));
      CHECK(r.output.find(p) != std::string::npos);
      CHECK(r.output.find("not inside a container region") != std::string::npos);
    }
  }
  SECTION("a path on another filesystem") {
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"region", "show", fs.scratch()}, {"df", fs.scratch()}, {"regions", fs.scratch()},
          {"region", "create", fs.scratch(), "--size", "32M"}}) {
      RunResult r = ctl(args);
      INFO(args[0] << ": " << r.output);
      CHECK(r.exit_code() == 1);
      CHECK(one_line(r.output));
      CHECK(r.output.find("not on a dhfs filesystem") != std::string::npos);
    }
  }
  SECTION("a bad --size") {
    for (const char* size : {"bogus", "12Q", "-5M", ""}) {
      RunResult r = ctl({"region", "create", fs.path("plain"), "--size", size});
      INFO("--size '" << size << "': " << r.output);
      CHECK(r.exit_code() == 2);
      CHECK(one_line(r.output));
    }
    RunResult missing = ctl({"region", "create", fs.path("plain"), "--size"});
    CHECK(missing.exit_code() == 2);
    CHECK(one_line(missing.output));
    // Nothing was created.
    CHECK(ctl({"region", "show", fs.path("plain")}).exit_code() == 1);
  }
  SECTION("a path that does not exist, frag of a directory") {
    RunResult r = ctl({"frag", fs.path("nope")});
    CHECK(r.exit_code() == 1);
    CHECK(one_line(r.output));
    CHECK(r.output.find(fs.path("nope")) != std::string::npos);
    RunResult d = ctl({"frag", fs.path("plain")});
    INFO(d.output);
    CHECK(d.exit_code() == 1);
    CHECK(one_line(d.output));
  }
}

}  // namespace dhfs_test
