#include "sweep/runner.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "io/checkpoint_dir.hpp"
#include "io/jsonl.hpp"
#include "sweep/summary.hpp"
#include "train/checkpoint.hpp"

extern char** environ;

namespace fs = std::filesystem;
using nlohmann::json;

namespace pg {
namespace {

std::atomic<int> g_stop{0};
extern "C" void on_stop_signal(int sig) { g_stop.store(sig); }

// SIGINT/SIGTERM set a flag; the loop passes them on to the children and stops launching.
struct StopSignals {
  struct sigaction old_int {}, old_term {};
  StopSignals() {
    g_stop.store(0);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  }
};

std::string run_dir(const std::string& out, const SweepRun& r) { return out + "/" + r.name; }

// The step of the run's latest checkpoint, or -1 without one.
int64_t checkpoint_step(const std::string& dir) {
  try {
    const auto latest = io::find_latest_checkpoint(dir);
    if (!latest) return -1;
    return load_state_json(*latest).at("step").get<int64_t>();
  } catch (const std::exception&) {
    return -1;  // an unreadable checkpoint is treated as none; the run starts again
  }
}

void write_status(const std::string& dir, const RunStatus& s) {
  const json j = {{"status", s.status},       {"attempts", s.attempts}, {"wall_s", s.wall_s},
                  {"exit_code", s.exit_code}, {"device", s.device},     {"error", s.error}};
  io::write_file_atomic(dir + "/status.json", j.dump(2) + "\n");
}

// The last line of the child's log that reads as an error, else its last non-empty line.
std::string last_error_line(const std::string& log_path) {
  std::ifstream f(log_path);
  std::string line, last, last_error;
  while (std::getline(f, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    last = line;
    if (line.find("error") != std::string::npos) last_error = line;
  }
  std::string s = last_error.empty() ? last : last_error;
  if (s.size() > 300) s = s.substr(0, 297) + "...";
  return s;
}

struct Child {
  pid_t pid = -1;
  size_t run = 0, slot = 0;
  std::chrono::steady_clock::time_point start;
};

pid_t spawn_run(const SweepOptions& opt, const SweepRun& run, RunState state, const std::string& gpu, int attempt) {
  const std::string dir = run_dir(opt.out_dir, run);
  std::vector<std::string> args = {opt.exe, "train"};
  if (state == RunState::resume) args.insert(args.end(), {"--resume", dir});
  else args.insert(args.end(), {"--config", dir + "/config.json", "--out", dir});

  std::vector<std::string> env;
  for (char** e = environ; *e; ++e)
    if (gpu.empty() || !std::string_view(*e).starts_with("CUDA_VISIBLE_DEVICES=")) env.emplace_back(*e);
  if (!gpu.empty()) env.push_back("CUDA_VISIBLE_DEVICES=" + gpu);

  const std::string log = dir + "/train.log";
  {
    std::ofstream f(log, std::ios::app);
    f << "==== attempt " << attempt << (gpu.empty() ? "" : " on CUDA_VISIBLE_DEVICES=" + gpu) << ":";
    for (const auto& a : args) f << " " << a;
    f << "\n";
  }
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, opt.exe.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw UserError(opt.exe + ": cannot start a run (" + std::strerror(rc) + ")");
  return pid;
}

}  // namespace

const char* state_name(RunState s) {
  switch (s) {
    case RunState::fresh: return "run";
    case RunState::resume: return "resume";
    case RunState::done: return "done (skip)";
    case RunState::failed: return "failed (skip)";
  }
  return "?";
}

RunStatus read_run_status(const std::string& dir) {
  RunStatus s;
  std::ifstream f(dir + "/status.json");
  if (!f) return s;
  const json j = json::parse(f, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return s;
  s.status = j.value("status", "");
  s.attempts = j.value("attempts", 0);
  s.wall_s = j.value("wall_s", 0.0);
  s.exit_code = j.value("exit_code", 0);
  s.device = j.value("device", "");
  s.error = j.value("error", "");
  return s;
}

std::vector<RunState> plan_sweep(const Sweep& sweep, const std::string& out_dir, bool retry_failed) {
  std::vector<RunState> plan;
  for (const SweepRun& r : sweep.runs) {
    const std::string dir = run_dir(out_dir, r);
    if (fs::exists(dir + "/config.json")) {
      std::ifstream f(dir + "/config.json");
      const json have = json::parse(f, nullptr, /*allow_exceptions=*/false);
      if (have != to_json(r.config))
        throw UserError(dir + "/config.json: differs from this sweep's config for the run (base or set changed?); "
                        "remove the directory or choose another --out");
    }
    if (checkpoint_step(dir) == r.config.train.max_steps) plan.push_back(RunState::done);
    else if (read_run_status(dir).status == "failed" && !retry_failed) plan.push_back(RunState::failed);
    else if (checkpoint_step(dir) >= 0) plan.push_back(RunState::resume);
    else plan.push_back(RunState::fresh);
  }
  return plan;
}

SweepResult run_sweep(const Sweep& sweep, const SweepOptions& opt) {
  const std::vector<RunState> plan = plan_sweep(sweep, opt.out_dir, opt.retry_failed);
  std::error_code ec;
  fs::create_directories(opt.out_dir, ec);
  if (ec) throw UserError("--out " + opt.out_dir + ": cannot create directory (" + ec.message() + ")");
  {
    json runs = json::array();
    for (const SweepRun& r : sweep.runs) {
      json o = json::object();
      for (const auto& [k, v] : r.varying) o[k] = v;
      runs.push_back({{"name", r.name}, {"overrides", o}});
    }
    io::write_file_atomic(opt.out_dir + "/sweep.json",
                          json{{"sweep_file", sweep.file}, {"runs", runs}}.dump(2) + "\n");
  }

  SweepResult result;
  std::deque<size_t> queue;
  for (size_t i = 0; i < plan.size(); ++i) {
    if (plan[i] == RunState::done) ++result.done;
    else if (plan[i] == RunState::failed) ++result.failed;
    else queue.push_back(i);
  }
  const size_t n_slots = opt.gpus.empty() ? 1 : opt.gpus.size();
  spdlog::info("sweep {}: {} runs ({} to run, {} done, {} failed) in {}, {} at a time", sweep.file, sweep.runs.size(),
               queue.size(), result.done, result.failed, opt.out_dir, n_slots);
  write_summary(sweep, opt.out_dir);

  StopSignals signals;
  std::vector<bool> busy(n_slots, false);
  std::vector<Child> active;
  bool forwarded = false;
  int finished = 0;
  const int to_run = int(queue.size());
  while (!queue.empty() || !active.empty()) {
    const bool stopping = g_stop.load() != 0;
    for (size_t slot = 0; slot < n_slots && !stopping && !queue.empty(); ++slot) {
      if (busy[slot]) continue;
      const size_t i = queue.front();
      queue.pop_front();
      const SweepRun& r = sweep.runs[i];
      const std::string dir = run_dir(opt.out_dir, r);
      fs::create_directories(dir);
      io::write_file_atomic(dir + "/config.json", to_json(r.config).dump(2) + "\n");
      RunStatus st = read_run_status(dir);
      const RunState how = checkpoint_step(dir) >= 0 ? RunState::resume : RunState::fresh;
      st.status = "running";
      st.attempts += 1;
      st.device = opt.gpus.empty() ? "" : opt.gpus[slot];
      write_status(dir, st);
      spdlog::info("[{}/{}] {} {}{}", finished + int(active.size()) + 1, to_run,
                   how == RunState::resume ? "resume" : "start", r.name,
                   st.device.empty() ? "" : " on GPU " + st.device);
      active.push_back({spawn_run(opt, r, how, st.device, st.attempts), i, slot, std::chrono::steady_clock::now()});
      busy[slot] = true;
    }
    if (active.empty()) break;  // stopping with runs left in the queue

    bool reaped = false;
    for (size_t a = 0; a < active.size();) {
      int wstatus = 0;
      const pid_t p = waitpid(active[a].pid, &wstatus, WNOHANG);
      if (p == 0 || (p < 0 && errno == EINTR)) {
        ++a;
        continue;
      }
      const Child c = active[a];
      active.erase(active.begin() + std::ptrdiff_t(a));
      busy[c.slot] = false;
      reaped = true;
      ++finished;
      const SweepRun& r = sweep.runs[c.run];
      const std::string dir = run_dir(opt.out_dir, r);
      RunStatus st = read_run_status(dir);
      st.wall_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - c.start).count();
      st.exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + (WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0);
      const bool complete = checkpoint_step(dir) == r.config.train.max_steps;
      if (st.exit_code == 0 && complete) {
        st.status = "done";
        st.error.clear();
        ++result.done;
      } else if (g_stop.load() != 0 && (st.exit_code == 0 || WIFSIGNALED(wstatus))) {
        st.status = "interrupted";  // stopped by our signal: resumes on the next start
        ++result.not_run;
      } else {
        st.status = "failed";
        st.error = st.exit_code == 0 ? "exited before train.max_steps" : last_error_line(dir + "/train.log");
        if (WIFSIGNALED(wstatus)) st.error = "killed by signal " + std::to_string(WTERMSIG(wstatus));
        ++result.failed;
      }
      write_status(dir, st);
      write_summary(sweep, opt.out_dir);
      if (st.status == "failed")
        spdlog::warn("[{}/{}] {} failed after {} (exit {}): {}", finished, to_run, r.name, minutes_seconds(st.wall_s),
                     st.exit_code, st.error);
      else
        spdlog::info("[{}/{}] {} {} after {}", finished, to_run, r.name, st.status, minutes_seconds(st.wall_s));
    }
    if (g_stop.load() != 0 && !forwarded) {
      for (const Child& c : active) kill(c.pid, SIGTERM);  // each saves a checkpoint and exits
      forwarded = true;
    }
    if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  result.not_run += int(queue.size());
  result.interrupted = g_stop.load() != 0;
  return result;
}

}  // namespace pg
