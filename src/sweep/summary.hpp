// The results table of a sweep: DIR/summary.csv and DIR/summary.md, one row per run, sorted by
// final val loss (runs without one last, in run order).
//
// Columns: run (directory name; CSV only), one column per varying key with the run's resolved
// value, status (done | failed | interrupted | running | pending), steps (last logged step),
// final_train_loss, final_val_loss, best_val_loss, tokens_per_s (median over the logged
// intervals, so the first interval's warm-up does not count), wall_s (the run's processes, summed
// over attempts), and the Lipschitz certificate when any run's metrics carry it: the last logged
// lipschitz_bound and log10_lipschitz_bound (a bound too large for a double is logged as null with
// its log10 alone; the table then shows 10^x).
// The Markdown file adds the error line of every failed run under the table.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "sweep/sweep_spec.hpp"

namespace pg {

struct SummaryRow {
  std::string name;
  std::vector<std::string> values;  // one per Sweep::varying_keys
  std::string status;
  std::string error;
  int64_t steps = 0;
  std::optional<double> final_train_loss, final_val_loss, best_val_loss, tokens_per_s;
  std::optional<double> lipschitz_bound, log10_lipschitz_bound;
  double wall_s = 0;
};

// The rows, sorted, from the run directories under out_dir.
std::vector<SummaryRow> collect_summary(const Sweep& sweep, const std::string& out_dir);
// "3m07s", as the summary writes wall times.
std::string minutes_seconds(double seconds);
// Writes out_dir/summary.csv and out_dir/summary.md (atomically).
void write_summary(const Sweep& sweep, const std::string& out_dir);

}  // namespace pg
