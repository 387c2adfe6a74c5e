#include "sweep/summary.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "io/checkpoint_dir.hpp"
#include "io/jsonl.hpp"
#include "sweep/runner.hpp"

namespace pg {
namespace {

std::optional<double> number(const nlohmann::json& rec, const char* key) {
  const auto it = rec.find(key);
  if (it == rec.end() || !it->is_number()) return std::nullopt;
  const double x = it->get<double>();
  return std::isfinite(x) ? std::optional<double>(x) : std::nullopt;
}

std::string num(const std::optional<double>& x, const char* fmt) {
  if (!x) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, *x);
  return buf;
}

std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string md_cell(std::string s) {
  for (size_t p = 0; (p = s.find('|', p)) != std::string::npos; p += 2) s.insert(p, "\\");
  return s;
}

}  // namespace

std::string minutes_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  return buf;
}

std::vector<SummaryRow> collect_summary(const Sweep& sweep, const std::string& out_dir) {
  std::vector<SummaryRow> rows;
  for (const SweepRun& r : sweep.runs) {
    SummaryRow row;
    row.name = r.name;
    for (const auto& k : sweep.varying_keys) row.values.push_back(value_text(config_value(r.config, k)));
    const std::string dir = out_dir + "/" + r.name;
    const RunStatus st = read_run_status(dir);
    row.status = st.status.empty() ? "pending" : st.status;
    row.error = st.error;
    row.wall_s = st.wall_s;
    std::vector<double> tps;
    if (std::filesystem::exists(dir + "/metrics.jsonl")) {
      for (const auto& rec : io::read_jsonl(dir + "/metrics.jsonl")) {
        if (auto s = number(rec, "step")) row.steps = int64_t(*s);
        if (auto x = number(rec, "train_loss")) row.final_train_loss = x;
        if (auto x = number(rec, "val_loss")) {
          row.final_val_loss = x;
          row.best_val_loss = row.best_val_loss ? std::min(*row.best_val_loss, *x) : *x;
        }
        if (auto x = number(rec, "tokens_per_s"); x && *x > 0) tps.push_back(*x);
        if (rec.contains("log10_lipschitz_bound") || rec.contains("lipschitz_bound")) {
          row.lipschitz_bound = number(rec, "lipschitz_bound");
          row.log10_lipschitz_bound = number(rec, "log10_lipschitz_bound");
          if (!row.log10_lipschitz_bound && row.lipschitz_bound && *row.lipschitz_bound > 0)
            row.log10_lipschitz_bound = std::log10(*row.lipschitz_bound);
        }
      }
    }
    if (!tps.empty()) {
      std::nth_element(tps.begin(), tps.begin() + std::ptrdiff_t(tps.size() / 2), tps.end());
      row.tokens_per_s = tps[tps.size() / 2];
    }
    rows.push_back(std::move(row));
  }
  std::stable_sort(rows.begin(), rows.end(), [](const SummaryRow& a, const SummaryRow& b) {
    if (a.final_val_loss && b.final_val_loss) return *a.final_val_loss < *b.final_val_loss;
    return a.final_val_loss.has_value() && !b.final_val_loss.has_value();
  });
  return rows;
}

void write_summary(const Sweep& sweep, const std::string& out_dir) {
  const std::vector<SummaryRow> rows = collect_summary(sweep, out_dir);
  const bool lip =
      std::any_of(rows.begin(), rows.end(), [](const SummaryRow& r) { return r.log10_lipschitz_bound.has_value(); });

  std::string csv = "run";
  for (const auto& k : sweep.varying_keys) csv += "," + csv_cell(k);
  csv += ",status,steps,final_train_loss,final_val_loss,best_val_loss,tokens_per_s,wall_s";
  csv += lip ? ",lipschitz_bound,log10_lipschitz_bound\n" : "\n";
  for (const SummaryRow& r : rows) {
    csv += csv_cell(r.name);
    for (const auto& v : r.values) csv += "," + csv_cell(v);
    csv += "," + r.status + "," + std::to_string(r.steps) + "," + num(r.final_train_loss, "%.6f") + "," +
           num(r.final_val_loss, "%.6f") + "," + num(r.best_val_loss, "%.6f") + "," + num(r.tokens_per_s, "%.1f") +
           "," + num(r.wall_s, "%.1f");
    csv += lip ? "," + num(r.lipschitz_bound, "%.6g") + "," + num(r.log10_lipschitz_bound, "%.6f") + "\n" : "\n";
  }

  int counts[5] = {0, 0, 0, 0, 0};  // done failed interrupted running pending
  for (const SummaryRow& r : rows) {
    const char* names[] = {"done", "failed", "interrupted", "running"};
    int k = 4;
    for (int i = 0; i < 4; ++i)
      if (r.status == names[i]) k = i;
    ++counts[k];
  }
  std::string md = "# Sweep `" + md_cell(sweep.file) + "`\n\n" + std::to_string(rows.size()) + " runs: " +
                   std::to_string(counts[0]) + " done, " + std::to_string(counts[1]) + " failed, " +
                   std::to_string(counts[2] + counts[3] + counts[4]) + " not finished. Sorted by final val loss; " +
                   "tok/s is the median over logged intervals.\n\n| # |";
  for (const auto& k : sweep.varying_keys) md += " `" + md_cell(k) + "` |";
  md += " status | steps | train loss | val loss | best val | tok/s | wall |";
  md += lip ? " certificate |\n|---:|" : "\n|---:|";
  for (size_t i = 0; i < sweep.varying_keys.size(); ++i) md += "---|";
  md += "---|---:|---:|---:|---:|---:|---:|";
  md += lip ? "---:|\n" : "\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const SummaryRow& r = rows[i];
    md += "| " + std::to_string(i + 1) + " |";
    for (const auto& v : r.values) md += " " + md_cell(v) + " |";
    md += " " + r.status + " | " + std::to_string(r.steps) + " | " + num(r.final_train_loss, "%.4f") + " | " +
          num(r.final_val_loss, "%.4f") + " | " + num(r.best_val_loss, "%.4f") + " | " +
          num(r.tokens_per_s, "%.0f") + " | " + (r.wall_s > 0 ? minutes_seconds(r.wall_s) : "") + " |";
    if (lip)
      md += " " + (r.lipschitz_bound ? num(r.lipschitz_bound, "%.4g") : num(r.log10_lipschitz_bound, "10^%.1f")) + " |";
    md += "\n";
  }
  bool any_failed = false;
  for (const SummaryRow& r : rows)
    if (r.status == "failed") {
      if (!any_failed) md += "\nFailed runs:\n\n";
      any_failed = true;
      md += "- `" + r.name + "`: " + r.error + "\n";
    }
  io::write_file_atomic(out_dir + "/summary.csv", csv);
  io::write_file_atomic(out_dir + "/summary.md", md);
}

}  // namespace pg
