#include "dbot/eval/analyze.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "dbot/compat.h"
#include "dbot/data/eval_batches.h"
#include "dbot/io/files.h"

namespace dbot::eval {

at::Tensor patch_distances(int64_t grid, int64_t patch_size) {
  auto pos = at::arange(grid * grid, at::kDouble);
  auto row = at::floor(pos / static_cast<double>(grid)), col = pos - row * static_cast<double>(grid);  // [L]
  auto dr = row.unsqueeze(1) - row.unsqueeze(0), dc = col.unsqueeze(1) - col.unsqueeze(0);             // [L, L]
  return (dr * dr + dc * dc).sqrt() * static_cast<double>(patch_size);
}

at::Tensor attention_distance_sum(const at::Tensor& attn, int64_t grid, int64_t patch_size) {
  const auto L = grid * grid;
  TORCH_CHECK(attn.dim() == 4 && attn.size(2) == 1 + L && attn.size(3) == 1 + L, "attention maps of shape ",
              attn.sizes(), " for a ", grid, "x", grid, " grid with CLS");
  const auto patches = attn.to(at::kDouble).slice(2, 1).slice(3, 1);  // [N, h, L, L]: CLS row and column dropped
  const auto dist = patch_distances(grid, patch_size).to(patches.device());
  // Per query: sum over keys of weight x distance; then the mean over queries; then the sum over images.
  return (patches * dist).sum(-1).mean(-1).sum(0).to(at::kCPU);  // [h]
}

at::Tensor singular_value_share_sum(const at::Tensor& tokens, int64_t k_max) {
  const auto t = tokens.to(at::kDouble);
  const auto unit = t / t.norm(2, {-1}, true).clamp_min(1e-12);  // every token L2-normalized, no centering
  const auto s = at::linalg_svdvals(unit);                       // [N, min(L, D)], descending
  const auto k = std::min<int64_t>(k_max, s.size(1));
  auto share = s.cumsum(1).slice(1, 0, k) / s.sum(1, true);  // [N, k]
  if (k < k_max) share = at::cat({share, at::ones({share.size(0), k_max - k}, share.options())}, 1);
  return share.sum(0).to(at::kCPU);  // [k_max]
}

void accumulate(Analysis& a, model::VisionTransformer& encoder, const at::Tensor& images) {
  at::NoGradGuard no_grad;
  const auto& arch = encoder->cfg;
  const auto depth = static_cast<int64_t>(encoder->blocks.blocks.size());
  if (depth == 0) throw std::runtime_error("a zero-block encoder has no attention maps or block outputs to analyze");
  if (!a.attention_distance.defined()) {
    a.img_size = arch.img_size;
    a.patch_size = arch.patch_size;
    a.attention_distance = at::zeros({depth, arch.num_heads}, at::kDouble);
    a.sv_share = at::zeros({depth, kTopSingularValues}, at::kDouble);
  }
  auto x = encoder->embed_tokens(images);  // [B, 1+L, D]
  for (int64_t l = 0; l < depth; ++l) {
    auto& block = encoder->blocks.blocks[static_cast<size_t>(l)];
    a.attention_distance[l] +=
        attention_distance_sum(block->attn->attention_probs(block->norm1(x)), arch.grid_size(), arch.patch_size);
    x = block->forward(x);
    a.sv_share[l] += singular_value_share_sum(x.slice(1, 1));  // patch tokens before the final norm
  }
  a.images += images.size(0);
}

Analysis finish(Analysis a) {
  if (a.images == 0) throw std::runtime_error("no images to analyze");
  a.attention_distance = a.attention_distance / static_cast<double>(a.images);
  a.sv_share = a.sv_share / static_cast<double>(a.images);
  return a;
}

Analysis analyze_encoder(model::VisionTransformer& encoder, std::shared_ptr<const data::ImageSource> source,
                         const data::DataConfig& dc, int64_t batch_size, int64_t max_images,
                         const core::Runtime& runtime) {
  encoder->to(runtime.device);
  encoder->eval();
  const auto& arch = encoder->cfg;
  Analysis a;
  data::for_each_eval_batch(std::move(source), dc, arch.img_size, arch.in_chans, batch_size, runtime.device,
                            [&](const at::Tensor& x, const at::Tensor&) {
                              compat::AutocastGuard autocast(runtime.device.type(), runtime.amp_dtype());
                              accumulate(a, encoder, x.slice(0, 0, std::min(x.size(0), max_images - a.images)));
                              return a.images < max_images;
                            });
  return finish(std::move(a));
}

namespace {

nlohmann::json to_json(const at::Tensor& t) {  // [R, C] -> rows of numbers
  nlohmann::json rows = nlohmann::json::array();
  const auto c = t.to(at::kDouble).contiguous();
  for (int64_t r = 0; r < c.size(0); ++r) {
    const auto* p = c[r].data_ptr<double>();
    rows.push_back(std::vector<double>(p, p + c.size(1)));
  }
  return rows;
}

std::string quoted(const std::string& s) {  // a gnuplot string literal
  std::string out = "\"";
  for (const char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}

// Data files for gnuplot: per analysis i, attention_<i>.dat (layer, head, distance; layers 1-based, heads
// jittered around the layer so overlaid checkpoints stay visible) and svd_<i>.dat (layer, share k = 1..5).
void write_data(const std::vector<Analysis>& analyses, const std::string& dir) {
  const double n = static_cast<double>(analyses.size());
  for (size_t i = 0; i < analyses.size(); ++i) {
    const auto& a = analyses[i];
    std::ostringstream att, svd;
    att << "# layer head mean_attention_distance_px (" << a.label << ")\n";
    for (int64_t l = 0; l < a.attention_distance.size(0); ++l) {
      for (int64_t h = 0; h < a.attention_distance.size(1); ++h) {
        const double x = static_cast<double>(l + 1) + 0.5 * ((static_cast<double>(i) + 0.5) / n - 0.5);
        att << x << ' ' << h << ' ' << a.attention_distance[l][h].item<double>() << '\n';
      }
    }
    svd << "# layer top1 top2 top3 top4 top5 (" << a.label << ")\n";
    for (int64_t l = 0; l < a.sv_share.size(0); ++l) {
      svd << l + 1;
      for (int64_t k = 0; k < a.sv_share.size(1); ++k) svd << ' ' << a.sv_share[l][k].item<double>();
      svd << '\n';
    }
    io::write_atomic(dir + "/attention_" + std::to_string(i) + ".dat", att.str());
    io::write_atomic(dir + "/svd_" + std::to_string(i) + ".dat", svd.str());
  }
}

std::string attention_script(const std::vector<Analysis>& analyses) {
  std::ostringstream gp;
  const auto& a0 = analyses.front();
  int64_t depth = 0;
  for (const auto& a : analyses) depth = std::max(depth, a.attention_distance.size(0));
  gp << "set terminal pngcairo size 900,560 font 'sans,11'\nset output 'attention_distance.png'\n"
     << "set title "
     << quoted("Average attention distance per head (" + std::to_string(a0.img_size) + " px, patch " +
               std::to_string(a0.patch_size) + ")")
     << "\nset xlabel 'layer'\nset ylabel 'mean attention distance (px)'\nset key outside right top\n"
     << "set grid\nset xtics 1\nset xrange [0.5:" << static_cast<double>(depth) + 0.5 << "]\nset yrange [0:*]\nplot ";
  for (size_t i = 0; i < analyses.size(); ++i) {
    gp << (i ? ", \\\n     " : "") << "'attention_" << i << ".dat' using 1:3 with points pt 7 ps 0.8 lc " << i + 1
       << " title " << quoted(analyses[i].label);
  }
  gp << "\n";
  return gp.str();
}

std::string svd_script(const std::vector<Analysis>& analyses) {
  std::ostringstream gp;
  gp << "set terminal pngcairo size 1500,420 font 'sans,10'\nset output 'singular_values.png'\n"
     << "set multiplot layout 1," << kTopSingularValues
     << " title 'Share of the top-k singular values of the normalized patch tokens per layer (lower = less "
        "redundant)'\nset grid\nset xtics 1\nset xlabel 'layer'\n";
  for (int64_t k = 1; k <= kTopSingularValues; ++k) {
    gp << "set title 'top-" << k << "'\n"
       << (k == 1 ? "set key left center opaque box font ',9' samplen 2\n" : "unset key\n") << "plot ";
    for (size_t i = 0; i < analyses.size(); ++i) {
      gp << (i ? ", " : "") << "'svd_" << i << ".dat' using 1:" << k + 1 << " with linespoints pt 7 lc " << i + 1
         << " title " << quoted(analyses[i].label);
    }
    gp << "\n";
  }
  gp << "unset multiplot\n";
  return gp.str();
}

bool gnuplot_available() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string d; std::getline(dirs, d, ':');) {
    if (!d.empty() && ::access((d + "/gnuplot").c_str(), X_OK) == 0) return true;
  }
  return false;
}

// Runs `gnuplot script` with dir as its working folder (the scripts name their files relative to it); its
// output goes to our stderr. Returns the exit status (-1 when it could not start).
int run_gnuplot(const std::string& dir, const std::string& script) {
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (::chdir(dir.c_str()) != 0) ::_exit(126);
    ::dup2(STDERR_FILENO, STDOUT_FILENO);
    ::execlp("gnuplot", "gnuplot", script.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

AnalysisFiles write_analysis(const std::vector<Analysis>& analyses, const std::string& dir) {
  if (analyses.empty()) throw std::invalid_argument("nothing to write: no analyses");
  std::filesystem::create_directories(dir);
  nlohmann::json j;
  j["definitions"] = {
      {"attention_distance", "[layer][head] mean attention distance in pixels (METHOD.md, analysis tool 1)"},
      {"sv_share", "[layer][k-1] share of the top-k singular values, k = 1..5 (METHOD.md, analysis tool 2)"}};
  for (const auto& a : analyses) {
    j["analyses"].push_back({{"label", a.label},
                             {"images", a.images},
                             {"img_size", a.img_size},
                             {"patch_size", a.patch_size},
                             {"attention_distance", to_json(a.attention_distance)},
                             {"sv_share", to_json(a.sv_share)}});
  }
  AnalysisFiles files;
  io::write_atomic(dir + "/analysis.json", j.dump(1) + "\n");
  files.written.push_back(dir + "/analysis.json");
  write_data(analyses, dir);
  const std::pair<std::string, std::string> scripts[] = {{"attention_distance", attention_script(analyses)},
                                                         {"singular_values", svd_script(analyses)}};
  for (const auto& [name, text] : scripts) io::write_atomic(dir + "/" + name + ".gp", text);
  if (!gnuplot_available()) {
    files.note = "gnuplot not found: figures not drawn (install gnuplot-nox, then run `gnuplot " + scripts[0].first +
                 ".gp` and `gnuplot " + scripts[1].first + ".gp` in " + dir + ")";
    return files;
  }
  for (const auto& [name, text] : scripts) {
    const int status = run_gnuplot(dir, name + ".gp");
    if (status != 0) {
      throw std::runtime_error("gnuplot failed on " + dir + "/" + name + ".gp (exit status " + std::to_string(status) +
                               ")");
    }
    files.written.push_back(dir + "/" + name + ".png");
  }
  return files;
}

std::string analysis_table(const Analysis& a) {
  std::ostringstream out;
  char line[160];
  std::snprintf(line, sizeof line,
                "%s (%lld images)\n| layer | attention distance px: mean | min | max | top-1 sv share | top-5 |\n"
                "|---|---|---|---|---|---|\n",
                a.label.c_str(), static_cast<long long>(a.images));
  out << line;
  for (int64_t l = 0; l < a.attention_distance.size(0); ++l) {
    const auto d = a.attention_distance[l];
    std::snprintf(line, sizeof line, "| %lld | %.1f | %.1f | %.1f | %.3f | %.3f |\n", static_cast<long long>(l + 1),
                  d.mean().item<double>(), d.min().item<double>(), d.max().item<double>(),
                  a.sv_share[l][0].item<double>(), a.sv_share[l][kTopSingularValues - 1].item<double>());
    out << line;
  }
  return out.str();
}

}  // namespace dbot::eval
