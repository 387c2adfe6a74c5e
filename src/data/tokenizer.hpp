// GPT-2's byte-level BPE tokenizer, producing exactly the ids of OpenAI's encoder.
//
//   text ──PCRE2 pre-tokenisation──► pieces ──bytes──► BPE merges by rank ──► ids
//
// Pre-tokenisation splits text with GPT-2's pattern (contractions, letter runs, digit runs,
// punctuation runs, whitespace); each piece is then merged independently, starting from single
// bytes, always merging the adjacent pair with the lowest rank in vocab.bpe. The files store
// tokens through GPT-2's byte→unicode map (printable bytes stand for themselves, the rest are
// shifted to U+0100..); load() undoes it, so everything here works on raw bytes.
//
// "<|endoftext|>" is a single id (eot()) only when the caller inserts it; the same characters in
// text are ordinary text. Bytes that are not valid UTF-8 are never matched by the pattern; they
// are byte-level BPE'd on their own, so decode(encode(x)) == x for any byte string x.
// Test: tests/data/test_tokenizer.cpp (ids checked against an independent encoder).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pg {

class Gpt2Tokenizer {
 public:
  // dir/encoder.json (token → id) and dir/vocab.bpe (merges, best first). UserError naming the
  // file when it is missing or corrupt.
  static Gpt2Tokenizer load(const std::string& dir);

  std::vector<int> encode(std::string_view text) const;
  // Concatenated raw bytes of the tokens (may end inside a UTF-8 character). UserError on an id
  // outside [0, vocab_size).
  std::string decode(std::span<const int> ids) const;

  int eot() const { return eot_; }
  int vocab_size() const { return int(token_bytes_.size()); }

  Gpt2Tokenizer(Gpt2Tokenizer&&) noexcept;
  Gpt2Tokenizer& operator=(Gpt2Tokenizer&&) noexcept;
  ~Gpt2Tokenizer();

 private:
  Gpt2Tokenizer();
  void bpe(std::string_view piece, std::vector<int>& out) const;
  void encode_piece(std::string_view piece, std::vector<int>& out) const;

  struct Merge {
    int rank;
    int merged;  // id of the concatenation
  };
  static uint64_t pair_key(int left, int right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }

  std::vector<std::string> token_bytes_;  // id → raw bytes
  int byte_id_[256] = {};                 // id of each single-byte token
  std::unordered_map<uint64_t, Merge> merges_;
  int eot_ = -1;

  struct Regex;                  // compiled PCRE2 pattern (+ JIT), owned here
  std::unique_ptr<Regex> regex_;
  struct Cache;                  // piece → ids, shared by all encode() calls, guarded by a mutex
  std::unique_ptr<Cache> cache_;
};

}  // namespace pg
