#include "dbot/io/files.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

namespace dbot::io {

namespace {

// Makes a rename in `dir` durable (a power loss after it returns keeps the new name): 0 or the errno.
// Filesystems that cannot sync a folder say EINVAL; that is not an error.
int sync_folder(const std::string& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return errno;
  const int rc = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return rc == EINVAL ? 0 : rc;
}

std::atomic<uint64_t> g_tmp_counter{0};

// DBOT_TEST_WRITE_DELAY_MS: a pause between writing a temporary and renaming it, so that
// tests/kill_resume.sh can kill a run inside a checkpoint write every time it means to (0: none).
int test_write_delay_ms() {
  static const int ms = [] {
    const char* v = std::getenv("DBOT_TEST_WRITE_DELAY_MS");
    return v != nullptr ? std::max(0, std::atoi(v)) : 0;
  }();
  return ms;
}

}  // namespace

std::string temporary_name(const std::string& path) {
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(g_tmp_counter++);
}

void remove_stale_temporaries(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const auto at = name.rfind(".tmp.");
    if (at == std::string::npos) continue;
    const std::string rest = name.substr(at + 5);  // "<pid>.<n>"
    const auto dot = rest.find('.');
    if (dot == std::string::npos || dot == 0 || rest.find_first_not_of("0123456789.") != std::string::npos) continue;
    const auto pid = static_cast<pid_t>(std::stoll(rest.substr(0, dot)));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno == EPERM) continue;  // a live writer's file
    std::filesystem::remove(entry.path(), ec);
  }
}

void write_atomic(const std::string& path, const char* data, size_t size) {
  const std::string tmp = temporary_name(path);
  auto fail = [&](const std::string& what) {
    const std::string reason = std::strerror(errno);
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot write '" + path + "': " + what + ": " + reason);
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail("open");
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      fail("write");
    }
    done += static_cast<size_t>(n);
  }
  if (test_write_delay_ms() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(test_write_delay_ms()));
  if (::fsync(fd) != 0) {
    ::close(fd);
    fail("fsync");
  }
  if (::close(fd) != 0) fail("close");
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");
  if (const int rc = sync_folder(std::filesystem::path(path).parent_path().string()); rc != 0) {
    throw std::runtime_error("cannot write '" + path + "': fsync of its folder: " + std::strerror(rc));
  }
}

void write_atomic(const std::string& path, const std::string& text) { write_atomic(path, text.data(), text.size()); }

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open '" + path + "': " + std::strerror(errno));
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw std::runtime_error("cannot read '" + path + "'");
  return bytes;
}

}  // namespace dbot::io
