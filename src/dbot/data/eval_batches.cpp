#include "dbot/data/eval_batches.h"

#include "dbot/core/runtime.h"
#include "dbot/data/loader.h"

namespace dbot::data {

void for_each_eval_batch(std::shared_ptr<const ImageSource> source, const DataConfig& data, int64_t img_size,
                         int64_t in_chans, int64_t batch_size, c10::Device device, const EvalBatchFn& f) {
  Loader loader(std::move(source), transform_config(data, img_size, in_chans),
                loader_config(data, batch_size, /*train=*/false, /*seed=*/0));
  loader.start_epoch(0);
  for (int64_t it = 0; it < loader.iters_per_epoch(); ++it) {
    const LoadedBatch batch = loader.next();
    if (!f(normalize(core::to_device(batch.images, device), data.mean, data.std), batch.labels)) return;
  }
}

}  // namespace dbot::data
