// Crash test: a mixed workload runs on dhfs while the daemon is SIGKILLed at
// a random moment, many times over. After each kill the image must pass
// fsck.dhfs, mount again, and hold everything the workload had made durable
// (fsync of the file and of its directory) before the kill.
//
// The workload runs in a child process and appends to a log outside the
// filesystem: "I ..." before it starts changing something durable, and the
// completed operation once the change is fsynced. Changes whose intent has
// no completion may or may not have happened; everything else is checked
// exactly. Iterations: DHFS_CRASH_ITERATIONS (default 40).
//
// Clones (copy_file_range of a whole file into a new one, which dhfs answers
// by sharing the source's blocks) are part of the mix, and overwrites and
// truncates prefer files that share blocks, so that copy-on-write and the
// reference counts are crashed in the middle of too; fsck.dhfs checks every
// count after each kill.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "fixture.h"

namespace dhfs_test {
namespace {

std::uint64_t mix(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Deterministic content: `len` bytes from `seed`.
std::string gen(std::uint64_t seed, std::size_t len) {
  std::string out(len, '\0');
  std::uint64_t s = seed;
  for (std::size_t i = 0; i < len; i += 8) {
    std::uint64_t v = mix(s);
    std::memcpy(out.data() + i, &v, std::min<std::size_t>(8, len - i));
  }
  return out;
}

struct InodeModel {
  std::string content;
  std::map<std::string, std::string> xattrs;
  std::string history;  // the log lines that shaped it, for failure messages
  bool cloned = false;  // a clone, or the source of one: may share blocks
};

// What the filesystem must hold: names (relative paths) -> inode ids.
struct Model {
  std::map<std::string, int> names;
  std::map<int, InodeModel> inodes;
  std::set<std::string> dirs{""};
  int next_id = 1;
  int next_name = 1;

  std::vector<std::string> names_of(int id) const {
    std::vector<std::string> out;
    for (const auto& [n, i] : names)
      if (i == id) out.push_back(n);
    return out;
  }
};

// Names and inode ids are never reused, across rounds too: the workload of
// the next round starts from the parent's model.
void note_used_name(Model& m, const std::string& name) {
  std::string base = name.substr(name.rfind('/') + 1);
  if (base.size() > 1) m.next_name = std::max(m.next_name, std::atoi(base.c_str() + 1) + 1);
}

// Applies one completed log line to the model.
void apply_line(Model& m, const std::string& line) {
  std::istringstream in(line);
  std::string op, first;
  in >> op >> first;
  if (op != "C" && op != "D" && m.names.count(first)) m.inodes.at(m.names.at(first)).history += line + "\n";
  in.seekg(0);
  in >> op;
  if (op == "C") {
    std::string name;
    int id;
    std::size_t size, hole;
    std::uint64_t seed;
    in >> name >> id >> size >> hole >> seed;
    std::string c = gen(seed, size);
    std::fill(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(std::min(hole, size)), '\0');
    m.inodes[id] = {c, {}, line + "\n"};
    m.names[name] = id;
    m.next_id = std::max(m.next_id, id + 1);
    note_used_name(m, name);
  } else if (op == "W") {
    std::string name;
    std::size_t off, len;
    std::uint64_t seed;
    in >> name >> off >> len >> seed;
    std::string& c = m.inodes.at(m.names.at(name)).content;
    if (c.size() < off + len) c.resize(off + len, '\0');
    std::string d = gen(seed, len);
    std::copy(d.begin(), d.end(), c.begin() + static_cast<std::ptrdiff_t>(off));
  } else if (op == "T") {
    std::string name;
    std::size_t size;
    in >> name >> size;
    m.inodes.at(m.names.at(name)).content.resize(size, '\0');
  } else if (op == "R") {
    std::string from, to;
    in >> from >> to;
    m.names[to] = m.names.at(from);
    m.names.erase(from);
    note_used_name(m, to);
  } else if (op == "L") {
    std::string from, to;
    in >> from >> to;
    m.names[to] = m.names.at(from);
    note_used_name(m, to);
  } else if (op == "U") {
    std::string name;
    in >> name;
    int id = m.names.at(name);
    m.names.erase(name);
    if (m.names_of(id).empty()) m.inodes.erase(id);
  } else if (op == "X") {
    std::string name, key, value;
    in >> name >> key >> value;
    m.inodes.at(m.names.at(name)).xattrs[key] = value;
  } else if (op == "K") {
    std::string from, to;
    int id;
    in >> from >> to >> id;
    InodeModel& src = m.inodes.at(m.names.at(from));
    src.cloned = true;
    m.inodes[id] = {src.content, {}, line + "\n", true};
    m.names[to] = id;
    m.next_id = std::max(m.next_id, id + 1);
    note_used_name(m, to);
  } else if (op == "D") {
    std::string dir;
    in >> dir;
    m.dirs.insert(dir);
    note_used_name(m, dir);
  }
}

// ------------------------------------------------------------- the workload

class Workload {
 public:
  Workload(const MountedFs& fs, Model model, std::uint64_t seed, int log_fd)
      : fs_(fs), m_(std::move(model)), rng_(seed), log_(log_fd) {}

  [[noreturn]] void run() {
    while (true) {
      if (!step()) _exit(0);  // the daemon is gone: stop quietly
    }
  }

 private:
  void log(const std::string& line) {
    std::string l = line + "\n";
    if (::write(log_, l.data(), l.size()) != static_cast<ssize_t>(l.size())) _exit(3);
  }
  std::string abs(const std::string& rel) const { return fs_.path(rel); }
  std::string dir_of(const std::string& rel) const {
    auto slash = rel.rfind('/');
    return slash == std::string::npos ? std::string() : rel.substr(0, slash);
  }
  bool fsync_path(const std::string& rel, bool dir) {
    int fd = ::open(abs(rel).c_str(), dir ? O_RDONLY | O_DIRECTORY : O_WRONLY);
    if (fd < 0) return false;
    bool ok = ::fsync(fd) == 0;
    ::close(fd);
    return ok;
  }
  bool fsync_dir_of(const std::string& rel) { return fsync_path(dir_of(rel), true); }
  std::uint64_t r(std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng_); }
  std::string pick_name() {
    auto it = m_.names.begin();
    std::advance(it, static_cast<std::ptrdiff_t>(r(m_.names.size())));
    return it->first;
  }
  // Mostly a file that shares blocks (a clone or a clone's source), when
  // there is one: copy-on-write is what the crash should interrupt.
  std::string pick_name_for_change() {
    if (r(3) == 0) return pick_name();
    std::vector<std::string> cloned;
    for (const auto& [n, id] : m_.names)
      if (m_.inodes.at(id).cloned) cloned.push_back(n);
    return cloned.empty() ? pick_name() : cloned[r(cloned.size())];
  }
  std::string fresh_name() {
    auto it = m_.dirs.begin();
    std::advance(it, static_cast<std::ptrdiff_t>(r(m_.dirs.size())));
    std::string d = *it;
    return (d.empty() ? "" : d + "/") + "f" + std::to_string(m_.next_name++);
  }

  bool step() {
    std::uint64_t pick = r(100);
    if (m_.names.empty() || pick < 22) return create();
    if (pick < 30) return clone_file();
    if (pick < 44) return overwrite();
    if (pick < 51) return truncate();
    if (pick < 58) return rename_file();
    if (pick < 64) return link_file();
    if (pick < 74 || m_.names.size() > 150) return unlink_file();
    if (pick < 82) return set_xattr_on();
    if (pick < 85) return make_dir();
    return noise();
  }

  bool create() {
    std::string name = fresh_name();
    int id = m_.next_id++;
    static constexpr std::size_t kSizes[] = {0, 1, 100, 4095, 4096, 4097, 65536, 300000, 1 << 20};
    std::size_t size = kSizes[r(std::size(kSizes))] + r(3000);
    std::size_t hole = r(4) == 0 ? size / 2 : 0;  // sometimes sparse at the start
    std::uint64_t seed = rng_();
    log("I C " + name);
    int fd = ::open(abs(name).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd < 0) return false;
    std::string data = gen(seed, size);
    bool ok = size == hole || ::pwrite(fd, data.data() + hole, size - hole, static_cast<off_t>(hole)) ==
                                  static_cast<ssize_t>(size - hole);
    if (ok && size > 0 && hole == size) ok = ::ftruncate(fd, static_cast<off_t>(size)) == 0;
    ok = ok && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok || !fsync_dir_of(name)) return false;
    std::string line = "C " + name + " " + std::to_string(id) + " " + std::to_string(size) + " " +
                       std::to_string(hole) + " " + std::to_string(seed);
    apply_line(m_, line);
    log(line);
    return true;
  }

  bool overwrite() {
    std::string name = pick_name_for_change();
    std::size_t cur = m_.inodes.at(m_.names.at(name)).content.size();
    std::size_t off = r(cur + 8192), len = 1 + r(r(2) ? 5000 : 200000);
    std::uint64_t seed = rng_();
    std::string line = "W " + name + " " + std::to_string(off) + " " + std::to_string(len) + " " + std::to_string(seed);
    log("I " + line);
    int fd = ::open(abs(name).c_str(), O_WRONLY);
    if (fd < 0) return false;
    std::string d = gen(seed, len);
    bool ok = ::pwrite(fd, d.data(), len, static_cast<off_t>(off)) == static_cast<ssize_t>(len) && ::fdatasync(fd) == 0;
    ::close(fd);
    if (!ok) return false;
    apply_line(m_, line);
    log(line);
    return true;
  }

  bool truncate() {
    std::string name = pick_name_for_change();
    std::size_t cur = m_.inodes.at(m_.names.at(name)).content.size();
    std::size_t size = r(cur + 10000);
    std::string line = "T " + name + " " + std::to_string(size);
    log("I " + line);
    int fd = ::open(abs(name).c_str(), O_WRONLY);
    if (fd < 0) return false;
    bool ok = ::ftruncate(fd, static_cast<off_t>(size)) == 0 && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) return false;
    apply_line(m_, line);
    log(line);
    return true;
  }

  // A clone of a whole durable file under a new name: copy_file_range from
  // offset 0 to offset 0 (block aligned, so dhfs shares every block), then
  // both files and the directory fsynced.
  bool clone_file() {
    std::string from = pick_name(), to = fresh_name();
    int id = m_.next_id++;
    std::size_t size = m_.inodes.at(m_.names.at(from)).content.size();
    std::string line = "K " + from + " " + to + " " + std::to_string(id);
    log("I " + line);
    int in = ::open(abs(from).c_str(), O_RDONLY);
    if (in < 0) return false;
    int out = ::open(abs(to).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (out < 0) {
      ::close(in);
      return false;
    }
    loff_t off_in = 0, off_out = 0;
    bool ok = true;
    while (ok && static_cast<std::size_t>(off_in) < size) {
      ssize_t n = ::copy_file_range(in, &off_in, out, &off_out, size - static_cast<std::size_t>(off_in), 0);
      ok = n > 0;
    }
    ok = ok && ::fsync(out) == 0 && ::fsync(in) == 0;
    ::close(out);
    ::close(in);
    if (!ok || !fsync_dir_of(to)) return false;
    apply_line(m_, line);
    log(line);
    return true;
  }

  bool rename_file() {
    std::string from = pick_name(), to = fresh_name();
    std::string line = "R " + from + " " + to;
    log("I " + line);
    if (::rename(abs(from).c_str(), abs(to).c_str()) != 0) return false;
    if (!fsync_dir_of(from) || !fsync_dir_of(to)) return false;
    apply_line(m_, line);
    log(line);
    return true;
  }

  bool link_file() {
    std::string from = pick_name(), to = fresh_name();
    std::string line = "L " + from + " " + to;
    log("I " + line);
    if (::link(abs(from).c_str(), abs(to).c_str()) != 0 || !fsync_dir_of(to) || !fsync_path(to, false))
      return false;
    apply_line(m_, line);
    log(line);
    return true;
  }

  bool unlink_file() {
    std::string name = pick_name();
    std::string line = "U " + name;
    log("I " + line);
    if (::unlink(abs(name).c_str()) != 0 || !fsync_dir_of(name)) return false;
    apply_line(m_, line);
    log(line);
    return true;
  }

  bool set_xattr_on() {
    std::string name = pick_name();
    std::string key = "user.k" + std::to_string(r(4));
    std::string value = "v" + std::to_string(rng_());
    std::string line = "X " + name + " " + key + " " + value;
    log("I " + line);
    if (::setxattr(abs(name).c_str(), key.c_str(), value.data(), value.size(), 0) != 0 || !fsync_path(name, false))
      return false;
    apply_line(m_, line);
    log(line);
    return true;
  }

  bool make_dir() {
    if (m_.dirs.size() > 6) return noise();
    std::string dir = "d" + std::to_string(m_.next_name++);
    log("I D " + dir);
    if (::mkdir(abs(dir).c_str(), 0755) != 0 || !fsync_path("", true)) return false;
    apply_line(m_, "D " + dir);
    log("D " + dir);
    return true;
  }

  // Changes nobody makes durable: they may or may not survive, but must
  // never damage anything else.
  bool noise() {
    std::string name = "n" + std::to_string(m_.next_name++);
    int fd = ::open(abs(name).c_str(), O_CREAT | O_WRONLY, 0644);
    if (fd < 0) return false;
    std::string d = gen(rng_(), r(100000));
    bool ok = ::write(fd, d.data(), d.size()) == static_cast<ssize_t>(d.size());
    ::close(fd);
    return ok;
  }

  const MountedFs& fs_;
  Model m_;
  std::mt19937_64 rng_;
  int log_;
};

// ----------------------------------------------------------- verification

struct Uncertain {
  std::set<std::string> names;
  std::set<int> inodes;
};

// Reads the log lines appended since `from`, applies the completed ones and
// returns what the last, unfinished intent may have touched.
Uncertain replay_log(Model& m, const std::string& path, std::streamoff& from) {
  std::ifstream in(path);
  in.seekg(from);
  Uncertain u;
  std::string line, open_intent;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // a torn last line: the workload was killed writing it
    from = in.tellg();
    if (line.rfind("I ", 0) == 0) {
      open_intent = line.substr(2);
    } else {
      apply_line(m, line);
      open_intent.clear();
    }
  }
  if (!open_intent.empty()) {
    std::istringstream is(open_intent);
    std::string op, a, b;
    is >> op >> a >> b;
    if (op == "K") {  // a clone never changes its source: only the new name is uncertain
      u.names.insert(b);
      note_used_name(m, b);
      return u;
    }
    u.names.insert(a);
    note_used_name(m, a);
    if (op == "R" || op == "L") {
      u.names.insert(b);
      note_used_name(m, b);
    }
    if (m.names.count(a)) u.inodes.insert(m.names.at(a));
  }
  return u;
}

void collect(const MountedFs& fs, const std::string& rel, std::map<std::string, bool>& found) {
  for (const auto& e : list_dir(rel.empty() ? fs.root() : fs.path(rel), false)) {
    std::string child = rel.empty() ? e.name : rel + "/" + e.name;
    bool is_dir = e.type == DT_DIR;
    found[child] = is_dir;
    if (is_dir) collect(fs, child, found);
  }
}

// Checks the filesystem against the model, then removes whatever is
// uncertain (and the noise) so that the next round starts from a model that
// matches exactly.
void verify_and_settle(MountedFs& fs, Model& m, const Uncertain& u) {
  auto uncertain_name = [&](const std::string& n) {
    return u.names.count(n) || (m.names.count(n) && u.inodes.count(m.names.at(n)));
  };
  std::map<std::string, bool> found;
  collect(fs, "", found);
  for (const auto& [name, id] : m.names) {
    if (uncertain_name(name)) continue;
    const InodeModel& want = m.inodes.at(id);
    INFO("durable file " << name << " (inode " << id << "), history:\n" << want.history);
    REQUIRE(found.count(name));
    std::string got = read_file(fs.path(name));
    CHECK(got.size() == want.content.size());
    CHECK(bytes_diff(got, want.content) == "");
    for (const auto& [k, v] : want.xattrs) CHECK(get_xattr(fs.path(name), k) == v);
    bool shared_uncertain = false;
    for (const auto& other : m.names_of(id)) shared_uncertain |= uncertain_name(other);
    if (!shared_uncertain)
      CHECK(lstat_of(fs.path(name)).st_nlink == m.names_of(id).size());
  }
  for (const auto& [name, is_dir] : found) {
    if (is_dir) {
      INFO("directory " << name);
      CHECK((m.dirs.count(name) || u.names.count(name)));
      continue;
    }
    std::string base = name.substr(name.rfind('/') + 1);
    if (m.names.count(name) || uncertain_name(name) || base.rfind('n', 0) == 0) continue;
    FAIL("file " << name << " exists but was never made durable or was durably removed");
  }
  // Settle: drop uncertain names and inodes, and noise.
  for (const auto& [name, is_dir] : found) {
    std::string base = name.substr(name.rfind('/') + 1);
    bool drop = !is_dir && (uncertain_name(name) || base.rfind('n', 0) == 0);
    if (drop) REQUIRE(::unlink(fs.path(name).c_str()) == 0);
    if (is_dir && !m.dirs.count(name)) m.dirs.insert(name);  // an uncertain mkdir that happened
  }
  for (auto it = m.names.begin(); it != m.names.end();) {
    if (uncertain_name(it->first)) it = m.names.erase(it);
    else ++it;
  }
  for (int id : u.inodes) m.inodes.erase(id);
  for (auto it = m.inodes.begin(); it != m.inodes.end();) {
    if (m.names_of(it->first).empty()) it = m.inodes.erase(it);
    else ++it;
  }
  // After the removals above, the model must be exact.
  for (const auto& [name, id] : m.names) {
    INFO("after settling: " << name);
    CHECK(lstat_of(fs.path(name)).st_nlink == m.names_of(id).size());
  }
}

int iterations() {
  const char* e = std::getenv("DHFS_CRASH_ITERATIONS");
  return e ? std::max(1, std::atoi(e)) : 40;
}

}  // namespace

TEST_CASE("crash: SIGKILL of the daemon during a mixed workload keeps everything fsynced", "[crash][dhfs]") {
  DHFS_ONLY();
  // Checkpoints every second, so that kills land during them too.
  MountedFs fs(FsOptions{"checkpoint_interval=1"});
  const std::string log_path = fs.scratch() + "/workload.log";
  Model model;
  std::streamoff log_pos = 0;
  std::mt19937_64 rng(0xd4f5);
  const int rounds = iterations();
  for (int round = 0; round < rounds; ++round) {
    INFO("round " << round);
    int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    REQUIRE(log_fd >= 0);
    std::uint64_t seed = rng();
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) Workload(fs, model, seed, log_fd).run();
    ::close(log_fd);
    sleep_ms(100 + static_cast<int>(rng() % 900));
    // The daemon dies first, mid-operation; then the workload, before the
    // filesystem comes back.
    fs.kill_and_remount([&] {
      ::kill(child, SIGKILL);
      ::waitpid(child, nullptr, 0);
    });
    Uncertain u = replay_log(model, log_path, log_pos);
    verify_and_settle(fs, model, u);
    // Settling changed things: make them durable before the next kill.
    int dfd = ::open(fs.root().c_str(), O_RDONLY | O_DIRECTORY);
    REQUIRE(dfd >= 0);
    REQUIRE(::fsync(dfd) == 0);
    ::close(dfd);
  }
  std::size_t cloned = 0;
  for (const auto& [id, in] : model.inodes) cloned += in.cloned;
  WARN("crash rounds: " << rounds << ", durable files at the end: " << model.names.size() << " (" << cloned
                        << " cloned or clone sources)");
  fs.remount();
}

}  // namespace dhfs_test
