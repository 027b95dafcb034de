// The tiny network configuration of the golden reference (tests/reference/make_golden.py), shared by the
// tests and the fuzz harnesses' seed files.
#pragma once

#include "dbot/mkd/distiller.h"

namespace dbot::test {

// The reference's tiny configuration: 8x8 images, patch 2 (L = 16), 3 channels, width 16, depth 2, 2 heads;
// decoder width 8, 1 block, 2 heads.
inline model::VitConfig tiny_vit(int64_t in_chans = 3) {
  model::VitConfig c;
  c.name = "vit_tiny_patch2_8";
  c.img_size = 8;
  c.patch_size = 2;
  c.in_chans = in_chans;
  c.embed_dim = 16;
  c.depth = 2;
  c.num_heads = 2;
  return c;
}
inline mkd::MkdConfig tiny_mkd() {
  mkd::MkdConfig m;
  m.decoder.embed_dim = 8;
  m.decoder.depth = 1;
  m.decoder.num_heads = 2;
  return m;
}

}  // namespace dbot::test
