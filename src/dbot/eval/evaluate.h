// Evaluation of frozen encoders: k-NN and linear probe on cached features.
//
// Features (the default protocol): the encoder's final-norm output on the eval transform of each image
// (shorter side to img_size / data.crop_pct, centre crop), CLS token concatenated with the mean of the
// patch tokens: [N, 2D]. Images stream through the data loader (never all in memory).
// k-NN (DINO's protocol): cosine similarity to all training features, k nearest, each votes for its class
// with weight exp(sim / T); k = 20, T = 0.07.
// Linear probe (eval.linprobe_protocol: features, the default): features standardized with the training
// mean/std, one Linear layer trained with AdamW on softmax cross-entropy (mini-batches, cosine or constant
// lr), accuracy on the test set. Fast: the encoder sees each image once, without augmentation.
// eval.linprobe_protocol: mae is MAE's protocol instead (linprobe_mae.h): BatchNorm + Linear on the CLS token,
// LARS, 90 epochs through the frozen encoder with augmentation; the usual one in papers, and far slower.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dbot/core/runtime.h"
#include "dbot/data/source.h"
#include "dbot/eval/linprobe_mae.h"
#include "dbot/model/vit.h"

namespace dbot::eval {

// The recipe's eval section.
struct EvalConfig {
  int64_t knn_k = 20;
  double knn_temperature = 0.07;
  int64_t linprobe_epochs = 20;
  double linprobe_lr = 1e-3;
  int64_t linprobe_batch_size = 256;
  double linprobe_weight_decay = 1e-4;
  std::string linprobe_schedule = "cosine";    // cosine (from linprobe_lr to 0) | constant
  std::string linprobe_protocol = "features";  // features (the linprobe_* keys) | mae (the mae_* keys)
  MaeLinprobeConfig mae;
  int64_t batch_size = 500;  // feature extraction
  uint64_t seed = 0;         // the linear probe's shuffling (the run's train.seed)
  bool progress = false;     // not a recipe key: per-epoch lines of the MAE protocol
};

// How tokens of the final-norm output become one feature vector.
enum class Pool { kCls, kMean, kClsMean };  // CLS [D] | mean of the patch tokens [D] | both [2D]
Pool parse_pool(const std::string& name);   // "cls" | "mean" | "cls+mean"

// [N, D or 2D] fp32 CPU features of a source's images (eval transform, normalized with data.mean/std), in
// batches of eval.batch_size on the runtime's device under its autocast, without autograd.
at::Tensor extract_features(model::VisionTransformer& encoder, std::shared_ptr<const data::ImageSource> source,
                            const data::DataConfig& dc, int64_t batch_size, const core::Runtime& runtime,
                            Pool pool = Pool::kClsMean);

// Accuracy in [0, 1].
double knn_accuracy(const at::Tensor& train_f, const at::Tensor& train_y, const at::Tensor& test_f,
                    const at::Tensor& test_y, int64_t num_classes, int64_t k, double temperature);

double linprobe_accuracy(const at::Tensor& train_f, const at::Tensor& train_y, const at::Tensor& test_f,
                         const at::Tensor& test_y, int64_t num_classes, const EvalConfig& cfg);

struct Scores {
  double knn = -1, linprobe = -1;  // accuracy in [0, 1]; -1 = not run
};
// The labeled images evaluation uses: the k-NN bank / probe training set and the held-out set.
struct EvalData {
  std::shared_ptr<const data::ImageSource> train, val;
};
// data.format's evaluation sets (data/source.h); empty when the format has none (folder or filelist
// without data.eval_path): evaluation is then skipped.
std::optional<EvalData> open_eval_data(const data::DataConfig& data);

// The requested protocols with the eval settings: k-NN and the features probe on features of both sets
// (extracted once), the MAE probe through the encoder.
Scores evaluate_encoder(model::VisionTransformer& encoder, const EvalData& eval_data, const data::DataConfig& data,
                        const EvalConfig& cfg, const core::Runtime& runtime, bool knn, bool linprobe);

// An encoder from a checkpoint: which = "model" (the student) or "teacher". The architecture is `arch`
// (the run's model config); the depth comes from the tensors (a zero-block teacher has none).
model::VisionTransformer load_encoder(const std::string& checkpoint_path, const std::string& which,
                                      model::VitConfig arch);

struct StageResult {
  int64_t stage;
  std::string source;  // e.g. "stage-1.pt:teacher"
  double knn = -1, linprobe = -1;
};

// Evaluates stage 0 (stage-1.pt's teacher) and every stage-k.pt student of a run folder; writes
// results.json and results.md there (atomically) and returns the rows (none, with a message, when the data
// has no labeled evaluation sets).
std::vector<StageResult> evaluate_run(const std::string& run_dir, const model::VitConfig& arch,
                                      const data::DataConfig& data, const EvalConfig& cfg, const core::Runtime& runtime,
                                      bool quiet);

// Markdown table of the rows.
std::string results_markdown(const std::vector<StageResult>& rows, const std::string& title);

}  // namespace dbot::eval
