#include "dist/rendezvous.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>

#include "core/error.hpp"

namespace pg::dist {

namespace {

constexpr uint32_t kMagic = 0x50475256;  // "PGRV"
using Clock = std::chrono::steady_clock;

class Socket {  // owns one file descriptor
 public:
  explicit Socket(int fd = -1) : fd_(fd) {}
  Socket(Socket&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Socket& operator=(Socket&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~Socket() { reset(); }
  int fd() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

Clock::time_point deadline_after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

int ms_left(Clock::time_point deadline) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return int(std::clamp<int64_t>(ms, 0, 1 << 30));
}

// Waits until fd is readable (or writable); false on timeout.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, ms_left(deadline));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

// Reads exactly n bytes before the deadline; false on timeout, EOF or error.
bool read_exact(int fd, void* buf, size_t n, Clock::time_point deadline) {
  auto* p = static_cast<unsigned char*>(buf);
  while (n > 0) {
    if (!wait_fd(fd, POLLIN, deadline)) return false;
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r == 0) return false;
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return false;
    }
    p += r;
    n -= size_t(r);
  }
  return true;
}

bool write_all(int fd, const void* buf, size_t n) {
  const auto* p = static_cast<const unsigned char*>(buf);
  while (n > 0) {
    const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += r;
    n -= size_t(r);
  }
  return true;
}

std::string where(const DistEnv& env) { return env.master_addr + ":" + std::to_string(env.master_port); }

std::string timeout_text(double timeout_s) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "dist.timeout_s = %g s", timeout_s);
  return buf;
}

std::vector<uint8_t> serve(const DistEnv& env, std::span<const uint8_t> blob, double timeout_s) {
  const auto deadline = deadline_after(timeout_s);
  Socket listener(::socket(AF_INET, SOCK_STREAM, 0));
  if (listener.fd() < 0) throw UserError("dist: rank 0 cannot create a socket: " + std::string(std::strerror(errno)));
  const int one = 1;
  ::setsockopt(listener.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(uint16_t(env.master_port));
  if (::bind(listener.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw UserError("MASTER_PORT=" + std::to_string(env.master_port) + ": rank 0 cannot listen on it (" +
                    std::strerror(errno) + "); choose a free port");
  if (::listen(listener.fd(), 128) != 0)
    throw UserError("dist: rank 0 cannot listen on port " + std::to_string(env.master_port) + ": " + std::strerror(errno));

  std::vector<Socket> peers(size_t(env.world_size));
  int arrived = 1;  // rank 0 itself
  while (arrived < env.world_size) {
    if (!wait_fd(listener.fd(), POLLIN, deadline)) {
      std::string missing;
      for (int r = 1; r < env.world_size; ++r)
        if (peers[size_t(r)].fd() < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      throw UserError("dist: rank 0 waited " + timeout_text(timeout_s) + " at " + where(env) + " but only " +
                      std::to_string(arrived) + " of " + std::to_string(env.world_size) +
                      " ranks arrived (missing: " + missing + ")");
    }
    Socket s(::accept(listener.fd(), nullptr, nullptr));
    if (s.fd() < 0) continue;
    uint32_t hello[3];
    if (!read_exact(s.fd(), hello, sizeof hello, deadline) || hello[0] != kMagic) continue;  // not one of ours
    const int r = int(hello[1]), w = int(hello[2]);
    if (w != env.world_size)
      throw UserError("WORLD_SIZE: rank " + std::to_string(r) + " says " + std::to_string(w) + ", rank 0 says " +
                      std::to_string(env.world_size));
    if (r <= 0 || r >= env.world_size || peers[size_t(r)].fd() >= 0)
      throw UserError("RANK: rank " + std::to_string(r) + " arrived twice or is out of range for WORLD_SIZE=" +
                      std::to_string(env.world_size));
    peers[size_t(r)] = std::move(s);
    ++arrived;
  }
  const uint64_t len = blob.size();
  for (int r = 1; r < env.world_size; ++r) {
    const int fd = peers[size_t(r)].fd();
    if (!write_all(fd, &kMagic, sizeof kMagic) || !write_all(fd, &len, sizeof len) ||
        !write_all(fd, blob.data(), blob.size()))
      throw UserError("dist: rank 0 lost the connection to rank " + std::to_string(r) + " during the rendezvous");
  }
  return {blob.begin(), blob.end()};
}

std::vector<uint8_t> join(const DistEnv& env, double timeout_s) {
  const auto deadline = deadline_after(timeout_s);
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  const int gai = ::getaddrinfo(env.master_addr.c_str(), std::to_string(env.master_port).c_str(), &hints, &res);
  if (gai != 0) throw UserError("MASTER_ADDR=" + env.master_addr + ": cannot resolve (" + ::gai_strerror(gai) + ")");
  sockaddr_in addr{};
  std::memcpy(&addr, res->ai_addr, sizeof addr);
  ::freeaddrinfo(res);

  Socket s;
  std::string last_error = "no attempt";
  for (;;) {
    s = Socket(::socket(AF_INET, SOCK_STREAM, 0));
    if (::connect(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
    last_error = std::strerror(errno);
    if (Clock::now() >= deadline)
      throw UserError("dist: rank " + std::to_string(env.rank) + " could not reach rank 0 at " + where(env) +
                      " within " + timeout_text(timeout_s) + " (" + last_error + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const uint32_t hello[3] = {kMagic, uint32_t(env.rank), uint32_t(env.world_size)};
  uint32_t magic = 0;
  uint64_t len = 0;
  if (!write_all(s.fd(), hello, sizeof hello) || !read_exact(s.fd(), &magic, sizeof magic, deadline) ||
      magic != kMagic || !read_exact(s.fd(), &len, sizeof len, deadline) || len > (1u << 20))
    throw UserError("dist: rank " + std::to_string(env.rank) + " reached " + where(env) +
                    " but got no rendezvous answer within " + timeout_text(timeout_s) +
                    " (rank 0 failed, or another program holds that port)");
  std::vector<uint8_t> blob(static_cast<size_t>(len));
  if (!read_exact(s.fd(), blob.data(), blob.size(), deadline))
    throw UserError("dist: rank " + std::to_string(env.rank) + ": the rendezvous blob from rank 0 was cut short");
  return blob;
}

int parse_int(const char* name, const char* v, int lo) {
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || x < lo || x > (1 << 24))
    throw UserError(std::string(name) + "=" + v + ": expected an integer >= " + std::to_string(lo));
  return int(x);
}

}  // namespace

DistEnv dist_env_from_environment(const std::function<const char*(const char*)>& get_fn) {
  auto get = [&](const char* n) -> const char* { return get_fn ? get_fn(n) : std::getenv(n); };
  DistEnv e;
  const char* ws = get("WORLD_SIZE");
  if (!ws) return e;
  e.world_size = parse_int("WORLD_SIZE", ws, 1);
  const char* rank = get("RANK");
  if (!rank) throw UserError("RANK: not set, but WORLD_SIZE=" + std::string(ws) + " is (run through scripts/launch.sh)");
  e.rank = parse_int("RANK", rank, 0);
  if (e.rank >= e.world_size)
    throw UserError("RANK=" + std::string(rank) + ": must be below WORLD_SIZE=" + std::to_string(e.world_size));
  e.local_rank = get("LOCAL_RANK") ? parse_int("LOCAL_RANK", get("LOCAL_RANK"), 0) : e.rank;
  e.local_world_size =
      get("LOCAL_WORLD_SIZE") ? parse_int("LOCAL_WORLD_SIZE", get("LOCAL_WORLD_SIZE"), 1) : e.world_size;
  if (e.local_rank >= e.local_world_size)
    throw UserError("LOCAL_RANK=" + std::to_string(e.local_rank) + ": must be below LOCAL_WORLD_SIZE=" +
                    std::to_string(e.local_world_size));
  if (const char* a = get("MASTER_ADDR")) e.master_addr = a;
  if (e.master_addr.empty()) throw UserError("MASTER_ADDR: empty");
  if (const char* p = get("MASTER_PORT")) e.master_port = parse_int("MASTER_PORT", p, 1);
  if (e.master_port > 65535) throw UserError("MASTER_PORT=" + std::to_string(e.master_port) + ": expected 1..65535");
  return e;
}

std::vector<uint8_t> exchange_blob(const DistEnv& env, std::span<const uint8_t> blob, double timeout_s) {
  if (env.world_size == 1) return {blob.begin(), blob.end()};
  return env.rank == 0 ? serve(env, blob, timeout_s) : join(env, timeout_s);
}

}  // namespace pg::dist
