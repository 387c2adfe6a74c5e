// Text files → train/val token shards (what `polargpt prepare` runs).
//
// Each input file is ONE document (a corpus of many documents is given as many files; the Brown
// extraction writes one file per Brown sample). Every document is tokenized and preceded by
// <|endoftext|>, as in llm.c's data scripts. Documents go whole to val or train, in input order:
// a document goes to val whenever val holds fewer than val_fraction of the tokens seen so far, so
// val is about val_fraction of the tokens and spread over the whole corpus (every ~1/f-th
// document), never one contiguous stretch of it. The split depends only on the inputs' order and
// contents.
//
// Output: <out_dir>/<name>_train_000000.bin, _000001, ... and <name>_val_000000.bin, ..., each at
// most shard_tokens tokens (a document may continue into the next shard). No val shard is written
// when val_fraction is 0.
// Test: tests/data/test_prepare.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer.hpp"

namespace pg {

struct PrepareResult {
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;
  std::vector<std::string> files;  // shards written, train first
};

PrepareResult prepare_corpus(const std::vector<std::string>& inputs, const std::string& out_dir,
                             double val_fraction, const Gpt2Tokenizer& tok, const std::string& name,
                             int64_t shard_tokens = 100'000'000);

// Token ids of `text` separated by single spaces (`polargpt tokenize`).
std::string tokenize_to_string(const Gpt2Tokenizer& tok, std::string_view text);

}  // namespace pg
