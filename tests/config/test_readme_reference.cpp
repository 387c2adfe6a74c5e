// The README's config reference is the table the code prints (`polargpt config --describe`):
// a field added without regenerating the README fails here.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "config/config.hpp"

TEST_CASE("config: the README's reference table equals describe_markdown()", "[config]") {
  std::ifstream f(std::filesystem::path(POLARGPT_SOURCE_DIR) / "README.md");
  REQUIRE(f.good());
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string readme = ss.str();
  const std::string a = "<!-- config-reference:begin -->\n", b = "<!-- config-reference:end -->";
  const size_t i = readme.find(a), j = readme.find(b);
  REQUIRE(i != std::string::npos);
  REQUIRE(j != std::string::npos);
  const std::string table = readme.substr(i + a.size(), j - i - a.size());
  std::string expected = pg::describe_markdown();
  while (!expected.empty() && expected.back() == '\n') expected.pop_back();
  INFO("regenerate with: build/polargpt config --describe, between the config-reference markers");
  REQUIRE(table == expected + "\n");
}
