// The evaluation pass over a split: every image of a source once, in order, through the evaluation transform
// (shorter side to img_size / data.crop_pct, centre crop), normalized on the device. Shared by feature
// extraction (k-NN, linear probe, `dbot extract`), the analysis tools and fine-tuning's validation.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>

#include "dbot/data/dataset.h"
#include "dbot/data/source.h"

namespace dbot::data {

// Calls f(images, labels) per batch of `batch_size` (the last one may be smaller): images [B, in_chans, img_size,
// img_size] fp32 normalized with data.mean/std on `device`, labels [B] int64 on the CPU (-1 when unlabeled).
// f returns false to stop before the end.
using EvalBatchFn = std::function<bool(const at::Tensor& images, const at::Tensor& labels)>;
void for_each_eval_batch(std::shared_ptr<const ImageSource> source, const DataConfig& data, int64_t img_size,
                         int64_t in_chans, int64_t batch_size, c10::Device device, const EvalBatchFn& f);

}  // namespace dbot::data
