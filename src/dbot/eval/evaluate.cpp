#include "dbot/eval/evaluate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "dbot/compat.h"
#include "dbot/core/rng.h"
#include "dbot/data/eval_batches.h"
#include "dbot/data/loader.h"
#include "dbot/io/files.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/optim.h"

namespace dbot::eval {

Pool parse_pool(const std::string& name) {
  if (name == "cls") return Pool::kCls;
  if (name == "mean") return Pool::kMean;
  if (name == "cls+mean") return Pool::kClsMean;
  throw std::invalid_argument("unknown pooling '" + name + "': expected cls, mean or cls+mean");
}

at::Tensor extract_features(model::VisionTransformer& encoder, std::shared_ptr<const data::ImageSource> source,
                            const data::DataConfig& dc, int64_t batch_size, const core::Runtime& runtime, Pool pool) {
  at::NoGradGuard no_grad;
  encoder->to(runtime.device);
  encoder->eval();
  const auto& arch = encoder->cfg;
  std::vector<at::Tensor> out;
  data::for_each_eval_batch(std::move(source), dc, arch.img_size, arch.in_chans, batch_size, runtime.device,
                            [&](const at::Tensor& x, const at::Tensor&) {
                              compat::AutocastGuard autocast(runtime.device.type(), runtime.amp_dtype());
                              auto tokens = encoder->forward_features(x, /*final_norm=*/true).to(at::kFloat);
                              auto cls = tokens.select(1, 0), mean = tokens.slice(1, 1).mean(1);  // [B, D] each
                              auto f = pool == Pool::kCls ? cls : pool == Pool::kMean ? mean : at::cat({cls, mean}, 1);
                              out.push_back(f.to(at::kCPU));
                              return true;
                            });
  return at::cat(out, 0);
}

double knn_accuracy(const at::Tensor& train_f, const at::Tensor& train_y, const at::Tensor& test_f,
                    const at::Tensor& test_y, int64_t num_classes, int64_t k, double temperature) {
  at::NoGradGuard no_grad;
  TORCH_CHECK(k >= 1 && k <= train_f.size(0), "eval.knn_k must be in [1, number of training images]");
  auto l2n = [](const at::Tensor& f) { return f / f.norm(2, {1}, true).clamp_min(1e-12); };
  auto train_n = l2n(train_f), test_n = l2n(test_f);
  int64_t correct = 0;
  constexpr int64_t kChunk = 500;
  for (int64_t s = 0; s < test_n.size(0); s += kChunk) {
    auto sim = at::matmul(test_n.slice(0, s, s + kChunk), train_n.t());  // [B, Ntrain]
    auto top = at::topk(sim, k, 1);
    auto sims = std::get<0>(top), idx = std::get<1>(top);  // [B, k]
    auto labels = train_y.index_select(0, idx.reshape(-1)).view_as(idx);
    auto votes = at::zeros({sims.size(0), num_classes}, sims.options());
    votes.scatter_add_(1, labels, (sims / temperature).exp());
    correct += votes.argmax(1).eq(test_y.slice(0, s, s + kChunk)).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(test_f.size(0));
}

double linprobe_accuracy(const at::Tensor& train_f, const at::Tensor& train_y, const at::Tensor& test_f,
                         const at::Tensor& test_y, int64_t num_classes, const EvalConfig& cfg) {
  auto mean = train_f.mean(0, true), std = train_f.std(0, true, true) + 1e-6;
  auto xtr = (train_f - mean) / std, xte = (test_f - mean) / std;
  const int64_t N = xtr.size(0), B = cfg.linprobe_batch_size;
  TORCH_CHECK(B > 0 && B <= N, "eval.linprobe_batch_size must be in [1, number of training images]");
  auto weight = at::zeros({num_classes, xtr.size(1)}).requires_grad_(true);
  auto bias = at::zeros({num_classes}).requires_grad_(true);
  train::AdamWConfig oc;
  oc.weight_decay = cfg.linprobe_weight_decay;
  oc.beta2 = 0.999;
  train::AdamW opt({{"head.weight", weight}, {"head.bias", bias}}, oc);
  const int64_t ipe = N / B, total = cfg.linprobe_epochs * ipe;
  for (int64_t epoch = 0; epoch < cfg.linprobe_epochs; ++epoch) {
    auto gen = core::derive_generator(cfg.seed, core::RngPurpose::kEval, static_cast<uint64_t>(epoch));
    auto perm = at::randperm(N, gen, at::TensorOptions().dtype(at::kLong));
    for (int64_t it = 0; it < ipe; ++it) {
      auto idx = perm.slice(0, it * B, (it + 1) * B);
      auto logits = at::linear(xtr.index_select(0, idx), weight, bias);
      auto loss = at::cross_entropy_loss(logits, train_y.index_select(0, idx));
      opt.zero_grad();
      loss.backward();
      const double progress = static_cast<double>(epoch * ipe + it) / static_cast<double>(total);
      const bool constant = cfg.linprobe_schedule == "constant";
      opt.step(constant ? cfg.linprobe_lr : cfg.linprobe_lr * 0.5 * (1.0 + std::cos(M_PI * progress)));
    }
  }
  at::NoGradGuard no_grad;
  auto pred = at::linear(xte, weight, bias).argmax(1);
  return pred.eq(test_y).to(at::kDouble).mean().item<double>();
}

std::optional<EvalData> open_eval_data(const data::DataConfig& data) {
  EvalData d{data::open_source(data, "eval_train"), data::open_source(data, "eval_val")};
  if (!d.train || !d.val) return std::nullopt;
  for (const auto* src : {d.train.get(), d.val.get()}) {
    if (src->num_classes() <= 0) throw std::runtime_error(src->describe() + ": evaluation needs labeled images");
  }
  return d;
}

Scores evaluate_encoder(model::VisionTransformer& encoder, const EvalData& d, const data::DataConfig& data,
                        const EvalConfig& cfg, const core::Runtime& runtime, bool knn, bool linprobe) {
  Scores s;
  const bool mae = cfg.linprobe_protocol == "mae";
  if (knn || (linprobe && !mae)) {
    const auto ftr = extract_features(encoder, d.train, data, cfg.batch_size, runtime);
    const auto fte = extract_features(encoder, d.val, data, cfg.batch_size, runtime);
    const auto ytr = d.train->labels(), yte = d.val->labels();
    const int64_t classes = std::max(d.train->num_classes(), d.val->num_classes());
    if (knn) s.knn = knn_accuracy(ftr, ytr, fte, yte, classes, cfg.knn_k, cfg.knn_temperature);
    if (linprobe && !mae) s.linprobe = linprobe_accuracy(ftr, ytr, fte, yte, classes, cfg);
  }
  if (linprobe && mae) {
    s.linprobe =
        mae_linprobe_accuracy(encoder, d.train, d.val, data, cfg.mae, cfg.batch_size, cfg.seed, runtime, cfg.progress);
  }
  return s;
}

model::VisionTransformer load_encoder(const std::string& path, const std::string& which, model::VitConfig arch) {
  const train::Checkpoint ckpt = train::load_checkpoint(path);
  const train::TensorMap& state = which == "teacher" ? ckpt.teacher : ckpt.model;
  arch.depth = model::count_blocks(state);
  arch.drop_path_rate = 0.0;
  model::VisionTransformer encoder(arch);
  train::load_state_dict(*encoder, state, path + " (" + which + ")");
  encoder->eval();
  return encoder;
}

std::string results_markdown(const std::vector<StageResult>& rows, const std::string& title) {
  std::string md = "| stage | network | k-NN top-1 (%) | linear probe top-1 (%) |\n|---|---|---|---|\n";
  char line[256];
  for (const auto& r : rows) {
    std::snprintf(line, sizeof(line), "| %lld | %s | %.2f | %.2f |\n", static_cast<long long>(r.stage),
                  r.source.c_str(), 100.0 * r.knn, 100.0 * r.linprobe);
    md += line;
  }
  return (title.empty() ? "" : "## " + title + "\n\n") + md;
}

std::vector<StageResult> evaluate_run(const std::string& run_dir, const model::VitConfig& arch,
                                      const data::DataConfig& data, const EvalConfig& cfg, const core::Runtime& runtime,
                                      bool quiet) {
  namespace fs = std::filesystem;
  std::vector<std::pair<std::string, StageResult>> todo;  // (checkpoint, row)
  if (!fs::exists(run_dir + "/stage-1.pt")) throw std::runtime_error(run_dir + ": no stage-1.pt to evaluate");
  todo.push_back({run_dir + "/stage-1.pt", {0, "stage-1.pt:teacher"}});
  for (int64_t k = 1; fs::exists(run_dir + "/stage-" + std::to_string(k) + ".pt"); ++k) {
    todo.push_back({run_dir + "/stage-" + std::to_string(k) + ".pt", {k, "stage-" + std::to_string(k) + ".pt:model"}});
  }
  const auto eval_data = open_eval_data(data);
  if (!eval_data) {
    if (!quiet) {
      std::printf(
          "evaluation skipped: data.format %s has no labels; set data.eval_path to an ImageFolder root "
          "(train/ and val/) to evaluate\n",
          data.format.c_str());
    }
    return {};
  }
  if (!quiet) {
    std::printf("evaluation: %s | %s; linear probe protocol: %s\n", eval_data->train->describe().c_str(),
                eval_data->val->describe().c_str(), cfg.linprobe_protocol.c_str());
  }
  EvalConfig with_progress = cfg;
  with_progress.progress = !quiet;
  std::vector<StageResult> rows;
  for (auto& [path, row] : todo) {
    auto encoder = load_encoder(path, row.stage == 0 ? "teacher" : "model", arch);
    const Scores scores = evaluate_encoder(encoder, *eval_data, data, with_progress, runtime, true, true);
    row.knn = scores.knn;
    row.linprobe = scores.linprobe;
    if (!quiet) {
      std::printf("stage %lld (%s): k-NN %.2f%%  linear probe %.2f%%\n", static_cast<long long>(row.stage),
                  row.source.c_str(), 100 * row.knn, 100 * row.linprobe);
      std::fflush(stdout);
    }
    rows.push_back(row);
  }
  nlohmann::json j;
  j["model"] = arch.name;
  j["train_images"] = eval_data->train->size();
  j["test_images"] = eval_data->val->size();
  j["protocol"] = {{"features", "final norm, CLS concat mean(patches)"},
                   {"knn_k", cfg.knn_k},
                   {"knn_temperature", cfg.knn_temperature},
                   {"linprobe_protocol", cfg.linprobe_protocol},
                   {"linprobe_epochs", cfg.linprobe_protocol == "mae" ? cfg.mae.epochs : cfg.linprobe_epochs}};
  for (const auto& r : rows)
    j["stages"].push_back({{"stage", r.stage}, {"source", r.source}, {"knn", r.knn}, {"linprobe", r.linprobe}});
  io::write_atomic(run_dir + "/results.json", j.dump(2) + "\n");
  io::write_atomic(run_dir + "/results.md", results_markdown(rows, "dbot per-stage evaluation: " + arch.name));
  return rows;
}

}  // namespace dbot::eval
