#include <catch2/catch.hpp>

#include <chrono>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "data/tokenizer.hpp"

namespace {

const std::string kSourceDir = POLARGPT_SOURCE_DIR;

const pg::Gpt2Tokenizer& gpt2() {
  static const pg::Gpt2Tokenizer tok = pg::Gpt2Tokenizer::load(kSourceDir + "/data/tokenizer");
  return tok;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A scratch directory under the build tree's temp dir, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name) : path(std::filesystem::temp_directory_path() / (name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace

TEST_CASE("tokenizer: ids equal gpt-3-encoder's on every test vector", "[data]") {
  const auto vectors = nlohmann::json::parse(slurp(kSourceDir + "/tests/data/tokenizer_vectors.json"));
  REQUIRE(vectors.size() >= 40);
  for (const auto& v : vectors) {
    const std::string text = v.at("text").get<std::string>();
    const std::vector<int> expected = v.at("ids").get<std::vector<int>>();
    INFO("text: " << text);
    REQUIRE(gpt2().encode(text) == expected);
    REQUIRE(gpt2().decode(expected) == text);
  }
}

TEST_CASE("tokenizer: vocabulary size and <|endoftext|>", "[data]") {
  REQUIRE(gpt2().vocab_size() == 50257);
  REQUIRE(gpt2().eot() == 50256);
  const std::vector<int> eot{gpt2().eot()};
  REQUIRE(gpt2().decode(eot) == "<|endoftext|>");
  // The marker inside text is ordinary text, never the special id.
  const std::vector<int> ids = gpt2().encode("a<|endoftext|>b");
  REQUIRE(std::find(ids.begin(), ids.end(), gpt2().eot()) == ids.end());
  REQUIRE(gpt2().encode("").empty());
}

TEST_CASE("tokenizer: decode(encode(x)) == x for random bytes, invalid UTF-8 included", "[data]") {
  const uint64_t seed = 1234;
  INFO("seed " << seed);
  pg::Rng rng(seed);
  const std::string alphabet[] = {"a", "Z", " ", "  ", "\t", "\n", "'", "'s", "9", ".", "é", "日", "😀",
                                  "\xff", "\xc3", "\x80", "\xe6\x97", "\xf0\x9f\x98", std::string(1, '\0')};
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    const int n = int(rng.below(40));
    for (int i = 0; i < n; ++i) {
      if (rng.below(4) == 0)
        text.push_back(char(rng.below(256)));
      else
        text += alphabet[rng.below(std::size(alphabet))];
    }
    INFO("trial " << trial);
    const std::vector<int> ids = gpt2().encode(text);
    for (const int id : ids) REQUIRE((id >= 0 && id < gpt2().vocab_size()));
    REQUIRE(gpt2().decode(ids) == text);
  }
}

TEST_CASE("tokenizer: long runs of spaces and punctuation encode quickly and exactly", "[data]") {
  const std::string spaces(200000, ' ');
  const std::string dashes(200000, '-');
  const std::string text = "a" + spaces + "b " + dashes + "\n";
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int> ids = gpt2().encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE(gpt2().decode(ids) == text);
  REQUIRE(seconds < 5.0);
}

TEST_CASE("tokenizer: decode rejects ids outside the vocabulary", "[data]") {
  const std::vector<int> bad{50257};
  REQUIRE_THROWS_AS(gpt2().decode(bad), pg::UserError);
}

TEST_CASE("tokenizer: load names the missing or corrupt file", "[data]") {
  TempDir dir("polargpt_test_tokenizer");
  REQUIRE_THROWS_WITH(pg::Gpt2Tokenizer::load(dir.path.string()), Catch::Contains("encoder.json"));

  std::ofstream(dir.path / "encoder.json") << "{\"a\": 0, ";
  REQUIRE_THROWS_WITH(pg::Gpt2Tokenizer::load(dir.path.string()),
                      Catch::Contains("encoder.json") && Catch::Contains("not valid JSON"));

  std::filesystem::copy_file(kSourceDir + "/data/tokenizer/encoder.json", dir.path / "encoder.json",
                             std::filesystem::copy_options::overwrite_existing);
  REQUIRE_THROWS_WITH(pg::Gpt2Tokenizer::load(dir.path.string()), Catch::Contains("vocab.bpe"));

  std::ofstream(dir.path / "vocab.bpe") << "#version: 0.2\n\xc4\xa0 t\nnot-a-token zzzzqqq\n";
  REQUIRE_THROWS_WITH(pg::Gpt2Tokenizer::load(dir.path.string()),
                      Catch::Contains("vocab.bpe:3") && Catch::Contains("missing from encoder.json"));
}
