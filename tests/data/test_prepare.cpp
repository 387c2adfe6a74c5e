#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/temp_dir.hpp"
#include "core/error.hpp"
#include "data/prepare.hpp"
#include "data/shard.hpp"

namespace fs = std::filesystem;

namespace {

const pg::Gpt2Tokenizer& gpt2() {
  static const std::string source_dir = POLARGPT_SOURCE_DIR;
  static const pg::Gpt2Tokenizer tok = pg::Gpt2Tokenizer::load(source_dir + "/data/tokenizer");
  return tok;
}

using pg::test::TempDir;

std::vector<int> as_ints(const std::vector<uint16_t>& v) { return {v.begin(), v.end()}; }

// Splits a token stream at each <|endoftext|> into the decoded documents that follow it.
std::vector<std::string> documents(const std::vector<int>& ids) {
  std::vector<std::string> docs;
  std::vector<int> cur;
  for (size_t i = 0; i <= ids.size(); ++i) {
    if (i == ids.size() || ids[i] == gpt2().eot()) {
      if (i > 0) docs.push_back(gpt2().decode(cur));
      cur.clear();
    } else {
      cur.push_back(ids[i]);
    }
  }
  return docs;
}

}  // namespace

TEST_CASE("prepare: every document follows an EOT; val takes whole documents, about val_fraction", "[data]") {
  TempDir dir("polargpt_test_prepare");
  std::vector<std::string> inputs, texts;
  for (int d = 0; d < 40; ++d) {
    std::string text = "Document " + std::to_string(d) + ".\n\nIt's a small test, with café and 日本.";
    for (int i = 0; i < d % 5; ++i) text += " More words here.";
    texts.push_back(text);
    inputs.push_back(dir / ("doc" + std::to_string(d) + ".txt"));
    std::ofstream(inputs.back(), std::ios::binary) << text;
  }
  const auto result = pg::prepare_corpus(inputs, dir / "out", 0.1, gpt2(), "tiny");
  REQUIRE(result.files == std::vector<std::string>{dir / "out/tiny_train_000000.bin", dir / "out/tiny_val_000000.bin"});

  const auto train = as_ints(pg::read_shard(result.files[0]));
  const auto val = as_ints(pg::read_shard(result.files[1]));
  REQUIRE(int64_t(train.size()) == result.train_tokens);
  REQUIRE(int64_t(val.size()) == result.val_tokens);
  REQUIRE(train.front() == gpt2().eot());
  REQUIRE(val.front() == gpt2().eot());
  const double fraction = double(val.size()) / double(train.size() + val.size());
  REQUIRE(fraction > 0.07);
  REQUIRE(fraction < 0.13);

  // Together the two splits hold every document exactly once, tokenized as encode() does.
  const auto train_docs = documents(train), val_docs = documents(val);
  REQUIRE(train_docs.size() + val_docs.size() == texts.size());
  std::vector<std::string> all = train_docs;
  all.insert(all.end(), val_docs.begin(), val_docs.end());
  std::vector<std::string> sorted_texts = texts;
  std::sort(all.begin(), all.end());
  std::sort(sorted_texts.begin(), sorted_texts.end());
  REQUIRE(all == sorted_texts);
  std::vector<int> first{gpt2().eot()};
  const auto body = gpt2().encode(texts[0]);
  first.insert(first.end(), body.begin(), body.end());
  REQUIRE(std::vector<int>(train.begin(), train.begin() + first.size()) == first);

  // Val documents are spread out, not one stretch of the corpus.
  REQUIRE(val_docs.size() >= 3);

  // Deterministic: a second run writes the same bytes.
  const auto again = pg::prepare_corpus(inputs, dir / "again", 0.1, gpt2(), "tiny");
  REQUIRE(pg::read_shard(again.files[0]) == pg::read_shard(result.files[0]));
  REQUIRE(pg::read_shard(again.files[1]) == pg::read_shard(result.files[1]));
}

TEST_CASE("prepare: shards split at the size limit and concatenate back", "[data]") {
  TempDir dir("polargpt_test_prepare_split");
  const std::string in = dir / "one.txt";
  std::ofstream(in) << "The quick brown fox jumps over the lazy dog. The end.";
  const auto whole = pg::prepare_corpus({in}, dir / "whole", 0.0, gpt2(), "w");
  REQUIRE(whole.files.size() == 1);  // no val shard when val_fraction is 0
  const auto parts = pg::prepare_corpus({in}, dir / "parts", 0.0, gpt2(), "p", 5);
  REQUIRE(parts.train_tokens == whole.train_tokens);
  REQUIRE(int64_t(parts.files.size()) == (whole.train_tokens + 4) / 5);
  REQUIRE(parts.files[1] == dir / "parts/p_train_000001.bin");
  std::vector<uint16_t> joined;
  for (const auto& f : parts.files) {
    const auto t = pg::read_shard(f);
    REQUIRE(t.size() <= 5);
    joined.insert(joined.end(), t.begin(), t.end());
  }
  REQUIRE(joined == pg::read_shard(whole.files[0]));
}

TEST_CASE("prepare: missing input and bad val_fraction are user errors", "[data]") {
  TempDir dir("polargpt_test_prepare_bad");
  REQUIRE_THROWS_WITH(pg::prepare_corpus({dir / "nope.txt"}, dir / "o", 0.05, gpt2(), "x"), Catch::Contains("nope.txt"));
  REQUIRE_THROWS_AS(pg::prepare_corpus({dir / "nope.txt"}, dir / "o", 1.5, gpt2(), "x"), pg::UserError);
}

TEST_CASE("prepare: tokenize_to_string joins ids with single spaces", "[data]") {
  REQUIRE(pg::tokenize_to_string(gpt2(), "Hello world") == "15496 995");
  REQUIRE(pg::tokenize_to_string(gpt2(), "").empty());
}
