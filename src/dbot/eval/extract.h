// `dbot extract`: an encoder's features for every image of a source, written as one safetensors file for
// retrieval and for checking against other frameworks:
//   features F32 [N, F]  (F = D for pool cls or mean, 2D for cls+mean; the final-norm output on the eval
//                         transform, as evaluation computes it)
//   labels   I64 [N]     (only when the source is labeled)
//   names    U8  [bytes] the N image names (paths as the source gives them), each followed by '\n'
// Metadata: format = pt, dbot.version, dbot.pool, dbot.model (the encoder's architecture), dbot.source,
// dbot.count, plus what the caller adds (the weights file).
#pragma once

#include <map>
#include <string>

#include "dbot/eval/evaluate.h"

namespace dbot::eval {

struct ExtractResult {
  int64_t images = 0, dim = 0;
  bool labeled = false;
};

ExtractResult extract_to_file(model::VisionTransformer& encoder, std::shared_ptr<const data::ImageSource> source,
                              const data::DataConfig& dc, int64_t batch_size, const core::Runtime& runtime, Pool pool,
                              const std::string& out, std::map<std::string, std::string> metadata);

}  // namespace dbot::eval
