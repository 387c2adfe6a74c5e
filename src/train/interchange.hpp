// Models in and out of polargpt's checkpoints (`polargpt import`, `polargpt export`), over the
// layouts of model/gpt2_layout.hpp:
//
//   import_llmc   llm.c model file (.bin, fp32 v3 or bf16 v5) -> a checkpoint directory
//                 {model.safetensors, state.json} that eval, sample and export read. state.json
//                 holds step 0, the resolved config and "source" (file, version, padded vocab), so
//                 an export back to llm.c restores the padding and gives the same bytes.
//   export_hf     checkpoint -> DIR/{config.json, model.safetensors} for transformers'
//                 GPT2LMHeadModel (fp32), plus DIR/polargpt.json (source checkpoint and config,
//                 for scripts/check_hf_export.py) and, when the config's tokenizer directory has
//                 them, GPT-2's vocab.json and merges.txt.
//   export_llmc   checkpoint -> llm.c model file, fp32 (version 3) or bf16 (version 5).
//
// Exports refuse, with one line naming the field, configs that GPT-2 cannot express.
// Tests: tests/io/test_gpt2_interchange.cpp, tests/cli/test_interchange_cli.cpp.
#pragma once
#include <cstdint>
#include <string>

#include "config/config.hpp"

namespace pg {

// base supplies everything but the model section (data paths, batch size, tokenizer...).
// out_dir must not exist or be empty. Returns the config written.
Config import_llmc(const std::string& llmc_file, const std::string& out_dir, const Config& base);

void export_hf(const std::string& ckpt_dir, const std::string& out_dir);

// padded_vocab 0: the padding the checkpoint was imported with, else vocab_size rounded up to 128.
void export_llmc(const std::string& ckpt_dir, const std::string& out_file, bool bf16, int32_t padded_vocab = 0);

}  // namespace pg
