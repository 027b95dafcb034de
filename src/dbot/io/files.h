// Crash-safe file output: every file dbot writes for a run (checkpoints, results, resolved config) goes
// through write_atomic, so a kill or a full disk leaves either the old file or the new one, never half.
#pragma once

#include <string>
#include <vector>

namespace dbot::io {

// Writes to a temporary file of a unique name (temporary_name), fsyncs it, renames it over path and fsyncs the
// folder, so that a kill at any moment leaves either the old file or the new one (and a power loss after it
// returns, the new one). Throws std::runtime_error naming the path on failure (the temporary file is removed;
// an existing file at path is untouched).
void write_atomic(const std::string& path, const char* data, size_t size);
void write_atomic(const std::string& path, const std::string& text);

// "<path>.tmp.<pid>.<n>": unique per process and call, so two writers never share a temporary.
std::string temporary_name(const std::string& path);

// Removes the temporaries in `dir` that killed processes left ("*.tmp.<pid>.<n>" whose pid is gone).
void remove_stale_temporaries(const std::string& dir);

// Whole file; throws naming the path when it cannot be read.
std::vector<char> read_file(const std::string& path);

}  // namespace dbot::io
