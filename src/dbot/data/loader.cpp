#include "dbot/data/loader.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <stdexcept>

#include "dbot/core/rng.h"

namespace dbot::data {

at::Tensor normalize(const at::Tensor& images_u8, const std::vector<double>& mean, const std::vector<double>& std) {
  const int64_t C = images_u8.size(1);
  TORCH_CHECK(static_cast<int64_t>(mean.size()) == C && static_cast<int64_t>(std.size()) == C,
              "data.mean/data.std need one value per channel (", C, ")");
  auto m = at::tensor(std::vector<float>(mean.begin(), mean.end())).view({1, C, 1, 1}).to(images_u8.device());
  auto s = at::tensor(std::vector<float>(std.begin(), std.end())).view({1, C, 1, 1}).to(images_u8.device());
  return (images_u8.to(at::kFloat).div_(255.0) - m) / s;
}

void check_crop_scale(const std::vector<double>& scale, const std::string& key) {
  if (scale.size() != 2 || !(scale[0] > 0 && scale[0] <= scale[1] && scale[1] <= 1.0)) {
    throw std::invalid_argument(key + " must be [min, max] with 0 < min <= max <= 1");
  }
}

TransformConfig transform_config(const DataConfig& data, int64_t img_size, int64_t in_chans) {
  check_crop_scale(data.crop_scale, "data.crop_scale");
  if (!(data.crop_pct > 0 && data.crop_pct <= 1.0)) throw std::invalid_argument("data.crop_pct must be in (0, 1]");
  TransformConfig t;
  t.size = img_size;
  t.channels = in_chans;
  t.scale_min = data.crop_scale[0];
  t.scale_max = data.crop_scale[1];
  t.hflip = data.hflip;
  t.crop_pct = data.crop_pct;
  t.dct_scale = data.dct_scale;
  return t;
}

LoaderConfig loader_config(const DataConfig& data, int64_t batch_size, bool train, uint64_t seed) {
  if (data.workers < 0) throw std::invalid_argument("data.workers must be >= 0 (0 = one per core)");
  LoaderConfig c;
  c.batch_size = batch_size;
  c.train = train;
  c.workers = data.workers;
  c.skip_bad = data.skip_bad;
  c.seed = seed;
  return c;
}

namespace {
constexpr int64_t kMaxConsecutiveBad = 100;  // with skip_bad: this many unreadable files in a row is an error
}

struct Loader::Slot {
  int64_t iteration = -1, generation = -1;
  at::Tensor images, labels;
  int64_t remaining = 0, bad = 0;
  std::exception_ptr error;
};

Loader::Loader(std::shared_ptr<const ImageSource> source, const TransformConfig& transform, const LoaderConfig& cfg)
    : source_(std::move(source)), transform_(transform), cfg_(cfg) {
  if (cfg_.batch_size <= 0) throw std::invalid_argument("optim.batch_size must be positive");
  if (cfg_.world_size < 1 || cfg_.rank < 0 || cfg_.rank >= cfg_.world_size || (!cfg_.train && cfg_.world_size != 1)) {
    throw std::invalid_argument("Loader: rank " + std::to_string(cfg_.rank) + " of " + std::to_string(cfg_.world_size) +
                                " (evaluation loaders are not sharded)");
  }
  if (source_->size() == 0) throw std::invalid_argument(source_->describe() + ": no images");
  if (cfg_.train && iters_per_epoch() == 0) {
    throw std::invalid_argument("optim.batch_size " + std::to_string(cfg_.batch_size) + " x " +
                                std::to_string(cfg_.world_size) + " process(es) exceeds the " +
                                std::to_string(source_->size()) + " training images");
  }
  if (transform_.channels != 1 && transform_.channels != 3) {
    throw std::invalid_argument("model.in_chans must be 1 (grayscale) or 3 (RGB) to read images");
  }
  int64_t workers = cfg_.workers > 0 ? cfg_.workers : static_cast<int64_t>(std::thread::hardware_concurrency());
  workers = std::max<int64_t>(workers, 1);
  const int64_t prefetch = cfg_.prefetch > 0 ? cfg_.prefetch : std::max<int64_t>(2, 2 * workers / cfg_.batch_size + 1);
  for (int64_t i = 0; i < prefetch; ++i) ring_.push_back(std::make_unique<Slot>());
  for (int64_t i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

int64_t Loader::iters_per_epoch() const {
  const int64_t n = source_->size(), b = cfg_.batch_size, w = cfg_.world_size;
  return cfg_.train ? (n + w - 1) / w / b : (n + b - 1) / b;
}

int64_t Loader::position(int64_t iteration, int64_t j) const {
  const int64_t w = cfg_.world_size;
  return (iteration * cfg_.batch_size + j) * w + cfg_.rank;  // past N: DistributedSampler's padding (sample())
}

int64_t Loader::batch_len(int64_t iteration) const {
  return std::min(cfg_.batch_size, source_->size() - iteration * cfg_.batch_size);
}

std::vector<int64_t> Loader::order(int64_t epoch) const {
  std::vector<int64_t> out(static_cast<size_t>(source_->size()));
  if (!cfg_.train) {
    std::iota(out.begin(), out.end(), 0);
    return out;
  }
  auto gen = core::derive_generator(cfg_.seed, core::RngPurpose::kShuffle, static_cast<uint64_t>(epoch));
  const auto perm = at::randperm(source_->size(), gen, at::TensorOptions().dtype(at::kLong));
  std::copy_n(perm.data_ptr<int64_t>(), out.size(), out.begin());
  return out;
}

void Loader::start_epoch(int64_t epoch, int64_t first_iteration) {
  {
    std::lock_guard<std::mutex> lk(mu_);  // already serving exactly that (started ahead): keep its prefetch
    if (epoch_ == epoch && consume_iter_ == first_iteration && started_at_ == first_iteration) return;
  }
  auto order_now = std::make_shared<const std::vector<int64_t>>(order(epoch));
  {
    std::lock_guard<std::mutex> lk(mu_);
    started_at_ = first_iteration;
    ++generation_;
    epoch_ = epoch;
    order_ = std::move(order_now);
    fill_iter_ = consume_iter_ = first_iteration;
    fill_pos_ = 0;
    end_ = iters_per_epoch();
    for (auto& s : ring_) s->iteration = -1;
  }
  work_cv_.notify_all();
}

LoadedSample Loader::sample(int64_t epoch, int64_t position, const std::vector<int64_t>& order) const {
  const int64_t n = static_cast<int64_t>(order.size());
  double draws[kTrainDraws] = {};
  position %= n;  // the padding of a sharded epoch repeats its first samples
  at::Generator gen;
  if (cfg_.train) {
    const int64_t index = order[static_cast<size_t>(position)];
    gen = core::derive_generator(cfg_.seed, core::RngPurpose::kAugment,
                                 static_cast<uint64_t>(epoch) << 32 | static_cast<uint64_t>(index));
    const auto u = at::rand({kTrainDraws}, gen, at::TensorOptions().dtype(at::kDouble));
    std::copy_n(u.data_ptr<double>(), kTrainDraws, draws);
  }
  for (int64_t k = 0;; ++k) {  // with skip_bad, the next samples of the order stand in for a bad one
    const int64_t index = order[static_cast<size_t>((position + k) % n)];
    try {
      const StoredImage img = source_->load(index);
      if (!cfg_.train) return {eval_transform(img, transform_), index, k};
      Image out = train_transform(img, transform_, draws);
      if (transform_.rand_augment.num_layers > 0) rand_augment(out, transform_.rand_augment, transform_.fill, gen);
      return {std::move(out), index, k};
    } catch (const std::exception& e) {
      if (!cfg_.skip_bad || !dynamic_cast<const std::runtime_error*>(&e)) throw;
      std::fprintf(stderr, "data: skipping a bad image: %s\n", e.what());
      if (k + 1 >= std::min(kMaxConsecutiveBad, n)) {
        throw std::runtime_error(source_->name(index) + ": the last of " + std::to_string(k + 1) +
                                 " unreadable images in a row; stopping (data.skip_bad)");
      }
    }
  }
}

void Loader::work() {
  const int64_t P = static_cast<int64_t>(ring_.size());
  const int64_t C = transform_.channels, S = transform_.size;
  std::unique_lock<std::mutex> lk(mu_);
  while (true) {
    work_cv_.wait(lk, [&] { return stop_ || (fill_iter_ < end_ && fill_iter_ < consume_iter_ + P); });
    if (stop_) return;
    const int64_t it = fill_iter_, j = fill_pos_, len = batch_len(it);
    Slot& slot = *ring_[static_cast<size_t>(it % P)];
    if (j == 0) {
      slot.iteration = it;
      slot.generation = generation_;
      slot.images = at::empty({len, C, S, S}, at::kByte);
      slot.labels = at::empty({len}, at::kLong);
      slot.remaining = len;
      slot.bad = 0;
      slot.error = nullptr;
    }
    if (++fill_pos_ == len) {
      ++fill_iter_;
      fill_pos_ = 0;
    }
    const int64_t generation = generation_, epoch = epoch_;
    const auto order = order_;
    at::Tensor images = slot.images, labels = slot.labels;
    lk.unlock();
    std::exception_ptr error;
    int64_t bad = 0;
    try {
      const LoadedSample s = sample(epoch, position(it, j), *order);
      to_chw(s.image, images.data_ptr<uint8_t>() + j * C * S * S);
      labels.data_ptr<int64_t>()[j] = source_->label(s.index);  // a stand-in brings its own label
      bad = s.bad;
    } catch (...) {
      error = std::current_exception();
    }
    lk.lock();
    if (slot.generation == generation && slot.iteration == it) {
      if (error && !slot.error) slot.error = error;
      slot.bad += bad;
      if (--slot.remaining == 0) done_cv_.notify_all();
    }
  }
}

LoadedBatch Loader::next() {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lk(mu_);
  if (consume_iter_ >= end_) throw std::logic_error("Loader::next: past the end of the epoch (call start_epoch)");
  Slot& slot = *ring_[static_cast<size_t>(consume_iter_ % static_cast<int64_t>(ring_.size()))];
  done_cv_.wait(
      lk, [&] { return slot.iteration == consume_iter_ && slot.generation == generation_ && slot.remaining == 0; });
  LoadedBatch b;
  b.images = std::move(slot.images);
  b.labels = std::move(slot.labels);
  b.bad = slot.bad;
  const std::exception_ptr error = slot.error;
  slot.iteration = -1;
  ++consume_iter_;
  lk.unlock();
  work_cv_.notify_all();
  if (error) std::rethrow_exception(error);
  b.wait_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return b;
}

}  // namespace dbot::data
