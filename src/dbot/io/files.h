// Crash-safe file output: every file dbot writes for a run (checkpoints, results, resolved config) goes
// through write_atomic, so a kill or a full disk leaves either the old file or the new one, never half.
#pragma once

#include <string>
#include <vector>

namespace dbot::io {

// Writes to "<path>.tmp", fsyncs, renames over path. Throws std::runtime_error naming the path on failure
// (the temporary file is removed; an existing file at path is untouched).
void write_atomic(const std::string& path, const char* data, size_t size);
void write_atomic(const std::string& path, const std::string& text);

// Whole file; throws naming the path when it cannot be read.
std::vector<char> read_file(const std::string& path);

}  // namespace dbot::io
