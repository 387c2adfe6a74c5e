#include "data/tokenizer.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <fstream>
#include <mutex>
#include <queue>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace pg {
namespace {

// GPT-2's pre-tokenisation pattern, as in OpenAI's encoder.py.
constexpr const char* kPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// GPT-2's byte→unicode map: bytes that are printable Latin-1 stand for themselves; the other 68
// (controls, space, 0x7F-0xA0, 0xAD) become U+0100.. in byte order, so no token string holds
// whitespace or control characters. Returns code point → byte, -1 for code points not used.
std::vector<int> unicode_to_byte() {
  std::vector<int> inverse(512, -1);
  int shifted = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    inverse[printable ? b : 256 + shifted++] = b;
  }
  return inverse;
}

// A token string of encoder.json / vocab.bpe (UTF-8 over the byte→unicode alphabet) → raw bytes.
// Returns false if it holds a character outside that alphabet.
bool to_raw_bytes(std::string_view s, const std::vector<int>& inverse, std::string& out) {
  out.clear();
  for (size_t i = 0; i < s.size();) {
    const auto c = uint8_t(s[i]);
    int cp;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size() && (uint8_t(s[i + 1]) & 0xC0) == 0x80) {
      cp = ((c & 0x1F) << 6) | (uint8_t(s[i + 1]) & 0x3F);
      i += 2;
    } else {
      return false;  // the alphabet ends at U+0143: two UTF-8 bytes at most
    }
    if (cp >= int(inverse.size()) || inverse[cp] < 0) return false;
    out.push_back(char(inverse[cp]));
  }
  return true;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError(path + ": cannot open (the tokenizer needs encoder.json and vocab.bpe)");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace

struct Gpt2Tokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

struct Gpt2Tokenizer::Cache {
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int>, StringHash, std::equal_to<>> ids;
};

Gpt2Tokenizer::Gpt2Tokenizer() : regex_(std::make_unique<Regex>()), cache_(std::make_unique<Cache>()) {}
Gpt2Tokenizer::Gpt2Tokenizer(Gpt2Tokenizer&&) noexcept = default;
Gpt2Tokenizer& Gpt2Tokenizer::operator=(Gpt2Tokenizer&&) noexcept = default;
Gpt2Tokenizer::~Gpt2Tokenizer() = default;

Gpt2Tokenizer Gpt2Tokenizer::load(const std::string& dir) {
  Gpt2Tokenizer tok;
  const std::vector<int> inverse = unicode_to_byte();
  std::string raw;

  // encoder.json: {"token": id, ...}, ids dense in [0, n).
  const std::string enc_path = dir + "/encoder.json";
  nlohmann::json enc;
  try {
    enc = nlohmann::json::parse(read_file(enc_path));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(enc_path + ": not valid JSON (" + e.what() + ")");
  }
  if (!enc.is_object() || enc.empty())
    throw UserError(enc_path + ": expected a JSON object mapping token strings to ids");
  const size_t n = enc.size();
  tok.token_bytes_.assign(n, {});
  std::vector<bool> seen(n, false);
  std::unordered_map<std::string, int> id_of;
  id_of.reserve(n);
  for (const auto& [key, value] : enc.items()) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() >= int64_t(n))
      throw UserError(enc_path + ": id of token '" + key + "' must be an integer in [0, " + std::to_string(n) + ")");
    const int id = value.get<int>();
    if (seen[id]) throw UserError(enc_path + ": id " + std::to_string(id) + " is used twice");
    if (!to_raw_bytes(key, inverse, raw))
      throw UserError(enc_path + ": token '" + key + "' is not in GPT-2's byte-to-unicode alphabet");
    seen[id] = true;
    tok.token_bytes_[id] = raw;
    id_of.emplace(raw, id);
    if (key == "<|endoftext|>") tok.eot_ = id;
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = id_of.find(std::string(1, char(b)));
    if (it == id_of.end()) throw UserError(enc_path + ": byte " + std::to_string(b) + " has no token");
    tok.byte_id_[b] = it->second;
  }
  if (tok.eot_ < 0) throw UserError(enc_path + ": no <|endoftext|> token");

  // vocab.bpe: "#version" line, then one merge "left right" per line, best (rank 0) first.
  const std::string bpe_path = dir + "/vocab.bpe";
  std::istringstream lines(read_file(bpe_path));
  std::string line, left, right;
  int line_no = 0, rank = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    if (line.empty() || line.starts_with("#version")) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos)
      throw UserError(bpe_path + ":" + std::to_string(line_no) + ": expected two tokens separated by one space");
    const bool ok = to_raw_bytes(std::string_view(line).substr(0, space), inverse, left) &&
                    to_raw_bytes(std::string_view(line).substr(space + 1), inverse, right);
    const auto l = id_of.find(left), r = id_of.find(right), m = id_of.find(left + right);
    if (!ok || l == id_of.end() || r == id_of.end() || m == id_of.end())
      throw UserError(bpe_path + ":" + std::to_string(line_no) + ": merge '" + line +
                      "' uses or makes a token missing from encoder.json");
    tok.merges_.try_emplace(pair_key(l->second, r->second), Merge{rank++, m->second});
  }
  if (rank == 0) throw UserError(bpe_path + ": no merges");

  int err = 0;
  PCRE2_SIZE err_offset = 0;
  tok.regex_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_offset, nullptr);
  PG_CHECK(tok.regex_->code != nullptr, "GPT-2 pattern failed to compile");
  pcre2_jit_compile(tok.regex_->code, PCRE2_JIT_COMPLETE);  // ~10x faster; falls back to the interpreter
  return tok;
}

// Byte-level BPE of one piece. Symbols form a linked list over the piece's byte positions; a
// merge folds the right symbol into the left one. As in GPT-2's encoder.py, each round takes the
// lowest-ranked adjacent pair and merges every occurrence of it, left to right without overlap.
// A heap of candidate pairs (stale ones skipped) makes this O(n log n) instead of O(n^2), which
// matters for long runs of spaces or punctuation.
void Gpt2Tokenizer::bpe(std::string_view piece, std::vector<int>& out) const {
  const int n = int(piece.size());
  std::vector<int> id(n), next(n), prev(n);
  for (int i = 0; i < n; ++i) {
    id[i] = byte_id_[uint8_t(piece[i])];
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int rank, pos, left, right, merged;
  };
  const auto after = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(after)> heap(after);
  const auto push = [&](int pos) {
    if (pos < 0 || next[pos] < 0) return;
    const auto it = merges_.find(pair_key(id[pos], id[next[pos]]));
    if (it != merges_.end()) heap.push({it->second.rank, pos, id[pos], id[next[pos]], it->second.merged});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);

  std::vector<Candidate> round;
  while (!heap.empty()) {
    // One rank is one pair; merging it never creates that same pair again, so all of its
    // occurrences are in the heap now, in position order.
    const int rank = heap.top().rank;
    round.clear();
    while (!heap.empty() && heap.top().rank == rank) {
      round.push_back(heap.top());
      heap.pop();
    }
    for (const Candidate& c : round) {
      const int right = next[c.pos];
      // Token ids only get longer, so unchanged ids mean the pair is still there.
      if (id[c.pos] != c.left || right < 0 || id[right] != c.right) continue;
      id[c.pos] = c.merged;
      id[right] = -1;
      next[c.pos] = next[right];
      if (next[right] >= 0) prev[next[right]] = c.pos;
      push(prev[c.pos]);
      push(c.pos);
    }
  }
  for (int i = 0; i >= 0; i = next[i]) out.push_back(id[i]);
}

void Gpt2Tokenizer::encode_piece(std::string_view piece, std::vector<int>& out) const {
  if (piece.size() == 1) {
    out.push_back(byte_id_[uint8_t(piece[0])]);
    return;
  }
  // Long pieces (whitespace or punctuation runs) rarely repeat; keep them out of the cache.
  constexpr size_t kMaxCachedPiece = 64;
  constexpr size_t kMaxCacheEntries = size_t(1) << 20;
  const bool cacheable = piece.size() <= kMaxCachedPiece;
  if (cacheable) {
    std::lock_guard lock(cache_->mutex);
    const auto it = cache_->ids.find(piece);
    if (it != cache_->ids.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = out.size();
  bpe(piece, out);
  if (cacheable) {
    std::lock_guard lock(cache_->mutex);
    if (cache_->ids.size() >= kMaxCacheEntries) cache_->ids.clear();
    cache_->ids.emplace(std::string(piece), std::vector<int>(out.begin() + start, out.end()));
  }
}

std::vector<int> Gpt2Tokenizer::encode(std::string_view text) const {
  std::vector<int> out;
  out.reserve(text.size() / 3);
  const std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
      pcre2_match_data_create_from_pattern(regex_->code, nullptr), &pcre2_match_data_free);
  PG_CHECK(match != nullptr, "pcre2_match_data_create_from_pattern failed");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(regex_->code, subject, text.size(), pos, 0, match.get(), nullptr);
    size_t begin = text.size(), end = text.size();
    if (rc >= 0) {
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match.get());
      begin = ov[0];
      end = ov[1];
    } else if (rc != PCRE2_ERROR_NOMATCH) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw std::runtime_error(std::string("tokenizer: pcre2_match failed: ") + reinterpret_cast<char*>(msg));
    }
    // Bytes the pattern skipped can only be invalid UTF-8; keep them as their own piece.
    if (begin > pos) encode_piece(text.substr(pos, begin - pos), out);
    if (end > begin) encode_piece(text.substr(begin, end - begin), out);
    pos = end;
  }
  return out;
}

std::string Gpt2Tokenizer::decode(std::span<const int> ids) const {
  std::string out;
  for (const int id : ids) {
    if (id < 0 || id >= vocab_size())
      throw UserError("tokenizer: token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                      std::to_string(vocab_size()) + ")");
    out += token_bytes_[id];
  }
  return out;
}

}  // namespace pg
