// Listing image folders as torchvision does, and caching the listing.
//   scan_directory: "folder" = every image file under root, recursively; "imagefolder" = one class per
//     immediate subdirectory (sorted names), each scanned recursively. Files come in sorted(os.walk()) order
//     (by directory path, then by name), with their sizes (0 marks an empty file before anything reads it).
//   The cache: a text file keyed by (format, absolute root) holding the listing and the mtime of every
//   directory scanned. Adding, removing or renaming an entry changes its directory's mtime, so a cache whose
//   directories all keep their mtimes is the listing a new scan would give; checking it costs one stat per
//   directory instead of one per file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dbot::data {

struct ScanRecord {
  struct Dir {
    std::string path;  // relative to the root ("" = the root)
    int64_t mtime_ns = 0;
  };
  struct File {
    std::string path;  // relative to the root
    int64_t size = 0;
    int64_t label = -1;
  };
  std::vector<Dir> dirs;
  std::vector<File> files;
  std::vector<std::string> classes;  // imagefolder only
};

bool has_image_extension(const std::string& filename);  // jpg jpeg png ppm pgm bmp tif tiff webp, any case
std::string image_extension_list();                     // for messages
ScanRecord scan_directory(const std::string& root, const std::string& format);
int64_t directory_mtime(const std::string& dir);  // -1 when it cannot be read

// cache_dir "" = $XDG_CACHE_HOME/dbot or ~/.cache/dbot; "none" = no cache (returns "").
std::string cache_path(const std::string& cache_dir, const std::string& format, const std::string& root);
// True (rec filled) when the cache exists, is for (format, root), and every directory keeps its mtime.
bool load_scan_cache(const std::string& path, const std::string& format, const std::string& root, ScanRecord& rec);
// Writes the cache (atomically); returns a note for the log (where it went, or why not).
std::string save_scan_cache(const std::string& path, const std::string& format, const std::string& root,
                            const ScanRecord& rec);

}  // namespace dbot::data
