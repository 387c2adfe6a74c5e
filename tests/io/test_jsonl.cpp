#include <catch2/catch.hpp>

#include <filesystem>

#include "core/error.hpp"
#include "io/jsonl.hpp"
#include "common/temp_dir.hpp"

using nlohmann::json;
using pg::io::JsonlWriter;
using pg::test::slurp;
using pg::test::spit;
using pg::test::TempDir;

namespace {

std::vector<int64_t> steps_of(const std::vector<json>& rows) {
  std::vector<int64_t> out;
  for (const auto& r : rows) out.push_back(r.at("step").get<int64_t>());
  return out;
}

}  // namespace

TEST_CASE("jsonl: writer puts one compact object per line, reader gets them back", "[io]") {
  TempDir tmp;
  const std::string path = tmp / "metrics.jsonl";
  {
    JsonlWriter w(path, /*append=*/false);
    w.write({{"step", 1}, {"loss", 10.5}, {"lr", 1e-3}});
    // Visible to readers as soon as write() returns, without closing the writer.
    REQUIRE(slurp(path) == "{\"loss\":10.5,\"lr\":0.001,\"step\":1}\n");
    w.write({{"step", 2}, {"loss", 9.25}, {"note", "two\nlines"}});
  }
  const auto rows = pg::io::read_jsonl(path);
  REQUIRE(rows.size() == 2);
  REQUIRE(rows[0]["loss"] == 10.5);
  REQUIRE(rows[1]["note"] == "two\nlines");

  // append keeps the old lines; append=false starts over.
  {
    JsonlWriter w(path, /*append=*/true);
    w.write({{"step", 3}});
  }
  REQUIRE(steps_of(pg::io::read_jsonl(path)) == std::vector<int64_t>{1, 2, 3});
  {
    JsonlWriter w(path, /*append=*/false);
    w.write({{"step", 7}});
  }
  REQUIRE(steps_of(pg::io::read_jsonl(path)) == std::vector<int64_t>{7});
}

TEST_CASE("jsonl: a torn last line is skipped on read and dropped before appending", "[io]") {
  TempDir tmp;
  const std::string path = tmp / "metrics.jsonl";
  spit(path, "{\"step\":1}\n{\"step\":2}\n{\"step\":3,\"lo");
  REQUIRE(steps_of(pg::io::read_jsonl(path)) == std::vector<int64_t>{1, 2});
  {
    JsonlWriter w(path, /*append=*/true);
    w.write({{"step", 3}});
  }
  REQUIRE(slurp(path) == "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n");

  // A whole last object that only lacks its newline is kept and terminated.
  spit(path, "{\"step\":1}\n{\"step\":2}");
  REQUIRE(steps_of(pg::io::read_jsonl(path)) == std::vector<int64_t>{1, 2});
  {
    JsonlWriter w(path, /*append=*/true);
    w.write({{"step", 3}});
  }
  REQUIRE(slurp(path) == "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n");
}

TEST_CASE("jsonl: a bad line in the middle is a UserError naming file and line", "[io]") {
  TempDir tmp;
  const std::string path = tmp / "metrics.jsonl";
  spit(path, "{\"step\":1}\nnot json\n{\"step\":3}\n");
  REQUIRE_THROWS_WITH(pg::io::read_jsonl(path), Catch::Contains(path + ":2"));
  REQUIRE_THROWS_AS(pg::io::truncate_jsonl_after_step(path, 5), pg::UserError);
  REQUIRE_THROWS_AS(pg::io::read_jsonl(tmp / "missing.jsonl"), pg::UserError);
}

TEST_CASE("jsonl: truncate_jsonl_after_step keeps steps <= step and drops a torn line", "[io]") {
  TempDir tmp;
  const std::string path = tmp / "metrics.jsonl";
  {
    JsonlWriter w(path, false);
    for (int s = 10; s <= 50; s += 10) w.write({{"step", s}, {"loss", 1.0 / s}});
    w.write({{"event", "eval"}});  // no step: kept
  }
  const std::string before = slurp(path);
  spit(path, before + "{\"step\":60,\"lo");  // the crash tore the line after step 50

  pg::io::truncate_jsonl_after_step(path, 30);
  const auto rows = pg::io::read_jsonl(path);
  REQUIRE(rows.size() == 4);
  REQUIRE(steps_of({rows.begin(), rows.begin() + 3}) == std::vector<int64_t>{10, 20, 30});
  REQUIRE(rows[3]["event"] == "eval");
  // Kept lines are the original bytes; no temporary file is left behind.
  std::vector<std::string> lines;
  for (size_t pos = 0; pos < before.size();) {
    const size_t nl = before.find('\n', pos);
    lines.push_back(before.substr(pos, nl + 1 - pos));
    pos = nl + 1;
  }
  REQUIRE(lines.size() == 6);
  REQUIRE(slurp(path) == lines[0] + lines[1] + lines[2] + lines[5]);
  REQUIRE(std::distance(std::filesystem::directory_iterator(tmp.str()),
                        std::filesystem::directory_iterator()) == 1);

  // Resuming from step 30 then appends without duplicate steps.
  {
    JsonlWriter w(path, true);
    w.write({{"step", 40}});
  }
  REQUIRE(pg::io::read_jsonl(path).back()["step"] == 40);

  // A missing file stays missing.
  pg::io::truncate_jsonl_after_step(tmp / "none.jsonl", 3);
  REQUIRE_FALSE(std::filesystem::exists(tmp / "none.jsonl"));
}
