// A mounted image reached by another path: a loop device attached over the
// image file must not let a second daemon, mkfs.dhfs or fsck.dhfs at it.
#include <string>

#include "fixture.h"

using namespace dhfs_test;

namespace {

// A loop device over `image`, detached on destruction (losetup -d works
// while the device is open: the kernel detaches it on last close).
class LoopOver {
 public:
  explicit LoopOver(const std::string& image) {
    RunResult r = run({"/sbin/losetup", "-f", "--show", image});
    if (r.exit_code() == 0 && r.output.rfind("/dev/", 0) == 0) path_ = r.output.substr(0, r.output.find('\n'));
    output_ = r.output;
  }
  ~LoopOver() {
    if (!path_.empty()) run({"/sbin/losetup", "-d", path_});
  }
  LoopOver(const LoopOver&) = delete;
  LoopOver& operator=(const LoopOver&) = delete;
  const std::string& path() const { return path_; }
  const std::string& output() const { return output_; }

 private:
  std::string path_, output_;
};

}  // namespace

TEST_CASE("a mounted image is refused through a loop device over it", "[claim][dhfs]") {
  DHFS_ONLY_STRICT();
  MountedFs fs;
  write_file(fs.path("kept"), "still here");
  LoopOver loop(fs.image());
  INFO("losetup -f --show: " << loop.output());
  REQUIRE(!loop.path().empty());
  const std::string mounted = loop.path() + ": already mounted as " + fs.image();

  RunResult mk = run({tool_path("mkfs.dhfs"), "-f", loop.path()});
  CHECK(mk.exit_code() == 1);
  CHECK(mk.output == "mkfs.dhfs: " + mounted + "\n");
  RunResult ck = run({tool_path("fsck.dhfs"), "-n", loop.path()});
  CHECK(ck.exit_code() == 8);
  CHECK(ck.output.find(mounted) != std::string::npos);
  RunResult second = run({tool_path("dhfs"), loop.path(), fs.scratch()});
  if (second.exit_code() == 0) {  // mounted after all: take it down again (lazily: it may be serving)
    run({"/bin/umount", "-l", fs.scratch()});
    FAIL("a second daemon mounted the image through " << loop.path());
  }
  CHECK(second.exit_code() == 1);
  CHECK(second.output.find(mounted) != std::string::npos);

  CHECK(read_file(fs.path("kept")) == "still here");
  fs.remount();  // unmount, fsck.dhfs -n clean, mount again
  CHECK(read_file(fs.path("kept")) == "still here");
}
