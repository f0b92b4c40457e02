#include "dhfsctl_support.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

namespace dhfs_test {

std::string dhfsctl() { return tool_path("dhfsctl"); }

std::string json_field(const std::string& json, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  auto at = json.find(k);
  if (at == std::string::npos) return "";
  at += k.size();
  if (json[at] == '"') {
    auto end = json.find('"', at + 1);
    return json.substr(at + 1, end - at - 1);
  }
  auto end = json.find_first_of(",}", at);
  return json.substr(at, end - at);
}

std::uint64_t json_u64(const std::string& json, const std::string& key) {
  const std::string v = json_field(json, key);
  INFO("\"" << key << "\" in " << json);
  REQUIRE(!v.empty());
  return std::strtoull(v.c_str(), nullptr, 10);
}

RunResult ctl(const std::vector<std::string>& args) {
  std::vector<std::string> argv{dhfsctl()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, 60);
}

std::string ctl_json(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"--json"};
  argv.insert(argv.end(), args.begin(), args.end());
  RunResult r = ctl(argv);
  INFO("dhfsctl --json " << args[0] << ": " << r.output);
  REQUIRE(r.exit_code() == 0);
  return r.output;
}

void ctl_sync(const MountedFs& fs) {
  RunResult r = ctl({"sync", fs.root()});
  INFO(r.output);
  REQUIRE(r.exit_code() == 0);
}

Df df(const MountedFs& fs) {
  const std::string j = ctl_json({"df", fs.root()});
  return {json_u64(j, "physical_bytes"), json_u64(j, "saved_bytes"), json_u64(j, "shared_bytes"),
          json_u64(j, "logical_bytes")};
}

void write_durable(const std::string& path, std::string_view data) {
  Fd fd = open_fd(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pwrite_all(fd, data, 0);
  SYS(::fsync(fd));
  fd.close_checked();
}

void mkdirs(const MountedFs& fs, const std::string& rel) {
  for (std::size_t pos = 0; pos != std::string::npos;) {
    auto slash = rel.find('/', pos);
    const std::string cur = rel.substr(0, slash);
    if (!exists(fs.path(cur))) SYS(::mkdir(fs.path(cur).c_str(), 0755));
    pos = slash == std::string::npos ? slash : slash + 1;
  }
}

void drop_caches() {
  ::sync();
  Fd fd = open_fd("/proc/sys/vm/drop_caches", O_WRONLY);
  REQUIRE(::write(fd, "3\n", 2) == 2);
}

}  // namespace dhfs_test
