#include "dbot/data/scan.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>

#include "dbot/io/files.h"

namespace fs = std::filesystem;

namespace dbot::data {

namespace {

const char* const kExtensions[] = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

// sorted(os.walk(dir, followlinks=True)) with sorted file names: directories in path order, then their
// image files by name. Records every directory's mtime for the cache.
void walk(const fs::path& root, const std::string& rel_dir, ScanRecord& rec, int depth) {
  if (depth > 64) fail(root.string() + "/" + rel_dir, "directories nested over 64 deep (a symlink loop?)");
  const fs::path dir = rel_dir.empty() ? root : root / rel_dir;
  std::vector<std::string> files, dirs;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (it->is_directory(ec)) {
      dirs.push_back(name);
    } else if (has_image_extension(name)) {
      files.push_back(name);
    }
  }
  if (ec) fail(dir.string(), "cannot list (" + ec.message() + ")");
  rec.dirs.push_back({rel_dir, directory_mtime(dir.string())});
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    const std::string rel = rel_dir.empty() ? f : rel_dir + "/" + f;
    std::error_code size_ec;
    const auto size = fs::file_size(root / rel, size_ec);
    rec.files.push_back({rel, size_ec ? -1 : static_cast<int64_t>(size), -1});
  }
  // os.walk yields a directory before its subdirectories, and sorted() orders the tuples by path string:
  // "a/b" < "a/b c" < "a/b/x" is not a depth-first order, so collect everything and sort at the end.
  for (const auto& d : dirs) walk(root, rel_dir.empty() ? d : rel_dir + "/" + d, rec, depth + 1);
}

ScanRecord scan_unsorted(const std::string& root, const std::string& format) {
  ScanRecord rec;
  if (format == "folder") {
    walk(root, "", rec, 0);
    return rec;
  }
  // imagefolder: one class per immediate subdirectory, sorted by name.
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_directory(ec)) rec.classes.push_back(it->path().filename().string());
  }
  if (ec) fail(root, "cannot list (" + ec.message() + ")");
  std::sort(rec.classes.begin(), rec.classes.end());
  rec.dirs.push_back({"", directory_mtime(root)});
  for (size_t c = 0; c < rec.classes.size(); ++c) {
    const size_t before = rec.files.size();
    walk(root, rec.classes[c], rec, 1);
    for (size_t i = before; i < rec.files.size(); ++i) rec.files[i].label = static_cast<int64_t>(c);
  }
  return rec;
}

// Orders files as sorted(os.walk()) does: by their directory's path, then by name.
void sort_walk_order(ScanRecord& rec) {
  auto dir_of = [](const std::string& rel) {
    const auto slash = rel.rfind('/');
    return slash == std::string::npos ? std::string() : rel.substr(0, slash);
  };
  std::stable_sort(rec.files.begin(), rec.files.end(), [&](const ScanRecord::File& a, const ScanRecord::File& b) {
    if (a.label != b.label) return a.label < b.label;
    const std::string da = dir_of(a.path), db = dir_of(b.path);
    return da != db ? da < db : a.path < b.path;
  });
}

}  // namespace

bool has_image_extension(const std::string& filename) {
  std::string lower = filename;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* ext : kExtensions) {
    const size_t n = std::char_traits<char>::length(ext);
    if (lower.size() >= n && lower.compare(lower.size() - n, n, ext) == 0) return true;
  }
  return false;
}

std::string image_extension_list() {
  std::string out = "looked for";
  for (const char* ext : kExtensions) out += std::string(" ") + (ext + 1);
  return out;
}

ScanRecord scan_directory(const std::string& root, const std::string& format) {
  ScanRecord rec = scan_unsorted(root, format);
  sort_walk_order(rec);
  return rec;
}

int64_t directory_mtime(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
}

std::string cache_path(const std::string& cache_dir, const std::string& format, const std::string& root) {
  if (cache_dir == "none") return "";
  std::string dir = cache_dir;
  if (dir.empty()) {
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    if (xdg && *xdg) {
      dir = std::string(xdg) + "/dbot";
    } else if (home && *home) {
      dir = std::string(home) + "/.cache/dbot";
    } else {
      return "";
    }
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(std::hash<std::string>{}(format + "\n" + root)));
  return dir + "/filelist-" + hex + ".tsv";
}

bool load_scan_cache(const std::string& path, const std::string& format, const std::string& root, ScanRecord& rec) {
  std::ifstream in(path);
  if (!in) return false;
  std::string line, tag;
  auto header = [&](const char* key, std::string& value) {
    if (!std::getline(in, line)) return false;
    const auto tab = line.find('\t');
    if (tab == std::string::npos || line.substr(0, tab) != key) return false;
    value = line.substr(tab + 1);
    return true;
  };
  std::string magic, fmt, rt, n;
  if (!header("dbot-filelist", magic) || magic != "1" || !header("format", fmt) || fmt != format ||
      !header("root", rt) || rt != root) {
    return false;
  }
  ScanRecord r;
  auto count = [&](const char* key, size_t& value) {
    if (!header(key, n)) return false;
    value = static_cast<size_t>(std::strtoull(n.c_str(), nullptr, 10));
    return true;
  };
  size_t nd = 0, nf = 0, nc = 0;
  if (!count("dirs", nd)) return false;
  for (size_t i = 0; i < nd; ++i) {
    if (!std::getline(in, line)) return false;
    const auto tab = line.find('\t');
    if (tab == std::string::npos) return false;
    ScanRecord::Dir d{line.substr(tab + 1), std::strtoll(line.c_str(), nullptr, 10)};
    if (directory_mtime(d.path.empty() ? root : root + "/" + d.path) != d.mtime_ns) return false;  // changed
    r.dirs.push_back(std::move(d));
  }
  if (!count("classes", nc)) return false;
  for (size_t i = 0; i < nc; ++i) {
    if (!std::getline(in, line)) return false;
    r.classes.push_back(line);
  }
  if (!count("files", nf)) return false;
  r.files.reserve(nf);
  for (size_t i = 0; i < nf; ++i) {
    if (!std::getline(in, line)) return false;
    const auto t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
    if (t1 == std::string::npos || t2 == std::string::npos) return false;
    r.files.push_back({line.substr(t2 + 1), std::strtoll(line.c_str(), nullptr, 10),
                       std::strtoll(line.c_str() + t1 + 1, nullptr, 10)});
  }
  rec = std::move(r);
  return true;
}

std::string save_scan_cache(const std::string& path, const std::string& format, const std::string& root,
                            const ScanRecord& rec) {
  if (path.empty()) return "file list not cached (data.cache_dir: none)";
  auto plain = [](const std::string& s) { return s.find_first_of("\t\n\r") == std::string::npos; };
  std::ostringstream out;
  out << "dbot-filelist\t1\nformat\t" << format << "\nroot\t" << root << "\ndirs\t" << rec.dirs.size() << "\n";
  for (const auto& d : rec.dirs) {
    if (!plain(d.path)) return "file list not cached (a directory name holds a tab or newline)";
    out << d.mtime_ns << "\t" << d.path << "\n";
  }
  out << "classes\t" << rec.classes.size() << "\n";
  for (const auto& c : rec.classes) out << c << "\n";
  out << "files\t" << rec.files.size() << "\n";
  for (const auto& f : rec.files) {
    if (!plain(f.path)) return "file list not cached (a file name holds a tab or newline)";
    out << f.size << "\t" << f.label << "\t" << f.path << "\n";
  }
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  try {
    io::write_atomic(path, out.str());
  } catch (const std::exception& e) {
    return std::string("file list not cached (") + e.what() + ")";
  }
  return "file list cached in " + path;
}

}  // namespace dbot::data
