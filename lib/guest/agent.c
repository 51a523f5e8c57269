/*
 * vmfactory guest agent. lib/guest/build_guest.ts compiles it with
 * "gcc -static -Os -s -Wall -Wextra -Werror" into the initrd. The bundled tool carries it as the
 * string in lib/guest/agent_source.ts: after editing this file, regenerate that module with
 * "scripts/deno run -A scripts/gen_agent_source.ts" (lib/guest/agent_source_test.ts checks it).
 *
 * Serves the host on the virtio-serial port named "org.vmfactory.agent". Frames (big-endian):
 * u32 magic "VMFA", u8 version 2, u8 type, u16 flags 0, u32 request id, u32 payload length,
 * payload (at most 1 MiB). lib/guest/agent_frame.ts and agent_payload.ts are the host side.
 * Answers go out as plain frames. Requests come in COBS-encoded, each between two 0 bytes: hosts
 * connect one after another, and one may leave a request unfinished (killed mid-write) without
 * the agent seeing it leave (QEMU's close and open notices can arrive together, or after the next
 * host's data); the 0 that starts the next request ends the unfinished one, which then fails to
 * decode to a whole frame and is dropped. No request is ever read as the rest of another's.
 *
 * Idle costs nothing: while no host is connected the port reads EOF and polls HUP at once, so
 * the agent leaves it out of ppoll() and sleeps with SIGIO unblocked; the virtio_console driver
 * sends SIGIO (F_SETOWN + O_ASYNC) when the host connects or disconnects and when data arrives.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME "org.vmfactory.agent"
#define MAGIC 0x564d4641u
#define VERSION 2
#define HDR 16
#define MAX_PAYLOAD (1u << 20)
/* longest COBS-encoded request: one length byte per 254 bytes of frame */
#define MAX_SEGMENT (HDR + MAX_PAYLOAD + (HDR + MAX_PAYLOAD + 253) / 254)
#define MAX_JOBS 16
#define CHUNK 65536
#define BACKPRESSURE (256u * 1024)
#ifndef RNDRESEEDCRNG
#define RNDRESEEDCRNG _IO('R', 0x07) /* Linux 4.17; older C headers lack the name */
#endif

enum { OP_PING = 1, OP_INFO, OP_EXEC, OP_PERSONALIZE, OP_ONLINE_HOTPLUGGED };
enum { R_RESULT = 0x80, R_STDOUT, R_STDERR, R_EXIT, R_ERROR = 0xff };

struct job {
  int used, out_fd, err_fd, in_fd, timed_out, truncated;
  uint32_t id, limit;
  pid_t pid;
  unsigned char *in_buf;
  size_t in_len, in_off;
  uint64_t sent, deadline; /* deadline in CLOCK_MONOTONIC ms, 0 = none */
};

static int port = -1, host; /* host: a host is connected to the port */
static volatile sig_atomic_t got_io, got_chld;
static unsigned char in_buf[MAX_SEGMENT + CHUNK]; /* bytes since the last 0 delimiter */
static size_t in_len, in_scanned;                  /* in_scanned: bytes known to hold no 0 */
static int in_discard;                             /* the segment is too long: drop up to its 0 */
static unsigned char *out_buf;
static size_t out_len, out_cap;
static struct job jobs[MAX_JOBS];
static int boot_id_mounted;

static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void put32(unsigned char *p, uint32_t v) {
  p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}
static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void flush_out(void) {
  size_t off = 0;
  while (off < out_len) {
    ssize_t n = write(port, out_buf + off, out_len - off);
    if (n <= 0) break; /* EAGAIN: ppoll waits for POLLOUT */
    off += n;
  }
  memmove(out_buf, out_buf + off, out_len - off);
  out_len -= off;
}

/* Queues a frame. While no host is connected, answers wait for the next one (clients ignore
   ids they did not send) and command output is dropped. */
static void send_frame(int type, uint32_t id, const void *data, size_t len) {
  if (!host && (type == R_STDOUT || type == R_STDERR)) return;
  if (out_len + HDR + len > out_cap) {
    size_t cap = (out_len + HDR + len) * 2;
    unsigned char *p = realloc(out_buf, cap);
    if (!p) return;
    out_buf = p;
    out_cap = cap;
  }
  unsigned char *h = out_buf + out_len;
  put32(h, MAGIC);
  h[4] = VERSION; h[5] = type; h[6] = 0; h[7] = 0;
  put32(h + 8, id);
  put32(h + 12, len);
  if (len) memcpy(h + HDR, data, len);
  out_len += HDR + len;
  flush_out();
}

static void send_error(uint32_t id, const char *what) {
  char msg[512];
  int n = snprintf(msg, sizeof msg, "%s: %s", what, strerror(errno));
  send_frame(R_ERROR, id, msg, n < 0 ? 0 : (size_t)n);
}
static void send_text_error(uint32_t id, const char *msg) { send_frame(R_ERROR, id, msg, strlen(msg)); }

static int write_file(const char *path, const char *data, size_t len) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, data, len);
  int saved = errno;
  close(fd);
  errno = saved;
  return n == (ssize_t)len ? 0 : -1;
}
static ssize_t read_file(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, cap - 1);
  close(fd);
  if (n < 0) return -1;
  buf[n] = 0;
  return n;
}

/* ---- exec ---- */

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void pipe_output(struct job *j, int *fd, int type, int drain) {
  static unsigned char buf[CHUNK];
  do {
    ssize_t n = read(*fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0 || errno != EAGAIN) close_fd(fd);
      return;
    }
    size_t keep = n;
    if (j->sent + keep > j->limit) {
      keep = j->sent < j->limit ? j->limit - j->sent : 0;
      j->truncated = 1;
    }
    if (keep) send_frame(type, j->id, buf, keep);
    j->sent += keep;
  } while (drain);
}

static void feed_stdin(struct job *j) {
  while (j->in_off < j->in_len) {
    ssize_t n = write(j->in_fd, j->in_buf + j->in_off, j->in_len - j->in_off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) break; /* EPIPE: the child does not read its input */
    j->in_off += n;
  }
  close_fd(&j->in_fd);
}

static void finish_job(struct job *j, int status) {
  unsigned char exitp[10];
  pipe_output(j, &j->out_fd, R_STDOUT, 1);
  pipe_output(j, &j->err_fd, R_STDERR, 1);
  close_fd(&j->out_fd);
  close_fd(&j->err_fd);
  close_fd(&j->in_fd);
  free(j->in_buf);
  put32(exitp, WIFEXITED(status) ? (uint32_t)WEXITSTATUS(status) : 0xffffffffu);
  put32(exitp + 4, WIFSIGNALED(status) ? (uint32_t)WTERMSIG(status) : 0);
  exitp[8] = j->truncated;
  exitp[9] = j->timed_out;
  send_frame(R_EXIT, j->id, exitp, sizeof exitp);
  memset(j, 0, sizeof *j);
}

static void reap(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
    for (int i = 0; i < MAX_JOBS; i++)
      if (jobs[i].used && jobs[i].pid == pid) finish_job(&jobs[i], status);
}

/* payload: u32 flags (1 = shell line), u32 timeout ms (0 = none), u32 output limit (bytes of
   stdout and stderr together), u32 argc, argc x (u32 len, bytes), u32 stdin length, stdin bytes */
static void op_exec(uint32_t id, const unsigned char *p, size_t len) {
  const unsigned char *end = p + len;
  struct job *j = NULL;
  for (int i = 0; i < MAX_JOBS; i++)
    if (!jobs[i].used) { j = &jobs[i]; break; }
  if (!j) return send_text_error(id, "exec: too many running commands");
  if (len < 16) return send_text_error(id, "exec: malformed request");
  uint32_t flags = get32(p), timeout = get32(p + 4), limit = get32(p + 8), argc = get32(p + 12);
  p += 16;
  if (argc == 0 || argc > 4096) return send_text_error(id, "exec: bad argument count");
  char **argv = calloc(argc + 4, sizeof *argv);
  if (!argv) return send_text_error(id, "exec: out of memory");
  int ok = 1, n = 0;
  if (flags & 1) { argv[n++] = "/bin/sh"; argv[n++] = "-c"; }
  for (uint32_t i = 0; i < argc && ok; i++) {
    if (end - p < 4 || get32(p) > (size_t)(end - p) - 4) { ok = 0; break; }
    uint32_t l = get32(p);
    argv[n] = strndup((const char *)p + 4, l);
    if (!argv[n++]) ok = 0;
    p += 4 + l;
  }
  if (!ok || end - p < 4 || get32(p) > (size_t)(end - p) - 4) {
    for (int i = (flags & 1) ? 2 : 0; i < n; i++) free(argv[i]);
    free(argv);
    return send_text_error(id, "exec: malformed request");
  }
  uint32_t in_len = get32(p);
  int out[2], err[2], in[2] = {-1, -1};
  if (pipe2(out, O_CLOEXEC) < 0) { send_error(id, "exec: pipe"); goto done; }
  if (pipe2(err, O_CLOEXEC) < 0) { send_error(id, "exec: pipe"); close(out[0]); close(out[1]); goto done; }
  if (in_len && pipe2(in, O_CLOEXEC) < 0) {
    send_error(id, "exec: pipe");
    close(out[0]); close(out[1]); close(err[0]); close(err[1]);
    goto done;
  }
  pid_t pid = fork();
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    setsid();
    int nul = open("/dev/null", O_RDWR);
    dup2(in_len ? in[0] : nul, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    if (nul > 2) close(nul);
    execvp(argv[0], argv);
    dprintf(2, "%s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  if (in_len) close(in[0]);
  if (pid < 0) {
    send_error(id, "exec: fork");
    close(out[0]); close(err[0]);
    if (in_len) close(in[1]);
    goto done;
  }
  memset(j, 0, sizeof *j);
  j->used = 1;
  j->id = id;
  j->pid = pid;
  j->out_fd = out[0];
  j->err_fd = err[0];
  j->in_fd = in_len ? in[1] : -1;
  fcntl(j->out_fd, F_SETFL, O_NONBLOCK);
  fcntl(j->err_fd, F_SETFL, O_NONBLOCK);
  if (in_len) {
    fcntl(j->in_fd, F_SETFL, O_NONBLOCK);
    j->in_buf = malloc(in_len);
    if (j->in_buf) memcpy(j->in_buf, p + 4, in_len), j->in_len = in_len;
    feed_stdin(j);
  }
  j->limit = limit;
  j->deadline = timeout ? now_ms() + timeout : 0;
done:
  for (int i = (flags & 1) ? 2 : 0; i < n; i++) free(argv[i]);
  free(argv);
}

/* ---- other operations ---- */

static long meminfo(const char *text, const char *key) {
  const char *p = strstr(text, key);
  return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

/* The vmgenid GUID lives in firmware memory; its address is in the patched SSDT ("VGIA"). */
static int read_vmgenid(char *out) {
  static unsigned char t[8192];
  char path[64];
  for (int i = 0; i < 8; i++) {
    snprintf(path, sizeof path, i ? "/sys/firmware/acpi/tables/SSDT%d" : "/sys/firmware/acpi/tables/SSDT", i);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t n = read(fd, t, sizeof t);
    close(fd);
    unsigned char *v = n > 10 ? memmem(t, n, "VGIA\x0c", 5) : NULL; /* Name(VGIA, DWordConst) */
    if (!v || v + 9 > t + n) continue;
    uint64_t addr = v[5] | v[6] << 8 | v[7] << 16 | (uint64_t)v[8] << 24;
    /* read() refuses addresses above the end of RAM; mmap() is allowed for reserved memory */
    uint64_t at = addr + 40, page = at & ~(uint64_t)4095;
    int mem = open("/dev/mem", O_RDONLY | O_CLOEXEC);
    if (mem < 0) return -1;
    unsigned char *m = mmap(NULL, 8192, PROT_READ, MAP_SHARED, mem, page);
    close(mem);
    if (m == MAP_FAILED) return -1;
    unsigned char g[16];
    memcpy(g, m + (at - page), 16);
    munmap(m, 8192);
    sprintf(out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
            g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13],
            g[14], g[15]);
    return 0;
  }
  return -1;
}

static int count_online_cpus(void) {
  char buf[256];
  if (read_file("/sys/devices/system/cpu/online", buf, sizeof buf) < 0) return -1;
  int count = 0;
  for (char *p = buf; *p && *p != '\n';) {
    long a = strtol(p, &p, 10), b = a;
    if (*p == '-') b = strtol(p + 1, &p, 10);
    count += b - a + 1;
    if (*p == ',') p++;
  }
  return count;
}

static void op_info(uint32_t id) {
  static char mem[4096];
  char boot_id[64] = "", vmgenid[40] = "", text[1024];
  struct utsname u;
  struct timespec up, rt;
  uname(&u);
  clock_gettime(CLOCK_BOOTTIME, &up);
  clock_gettime(CLOCK_REALTIME, &rt);
  if (read_file("/proc/meminfo", mem, sizeof mem) < 0) mem[0] = 0;
  if (read_file("/proc/sys/kernel/random/boot_id", boot_id, sizeof boot_id) > 0)
    boot_id[strcspn(boot_id, "\n")] = 0;
  if (read_vmgenid(vmgenid) < 0) vmgenid[0] = 0;
  int n = snprintf(text, sizeof text,
                   "uptime_ms=%lld\nmem_total_kib=%ld\nmem_free_kib=%ld\nmem_available_kib=%ld\n"
                   "boot_id=%s\nhostname=%s\nkernel_release=%s\ncpus_online=%d\nvmgenid=%s\n"
                   "time_ns=%lld%09ld\n",
                   (long long)up.tv_sec * 1000 + up.tv_nsec / 1000000, meminfo(mem, "MemTotal:"),
                   meminfo(mem, "MemFree:"), meminfo(mem, "MemAvailable:"), boot_id, u.nodename,
                   u.release, count_online_cpus(), vmgenid, (long long)rt.tv_sec, rt.tv_nsec);
  send_frame(R_RESULT, id, text, n);
}

/* Mixes the host's bytes into the input pool, credits them, and forces the CRNG to reseed from
   it at once (else a clone could keep drawing from the template's CRNG state for a while). */
static int seed_rng(const unsigned char *p, size_t len, const char **step) {
  static union {
    struct rand_pool_info info;
    unsigned char raw[sizeof(struct rand_pool_info) + 4096];
  } pool;
  pool.info.entropy_count = len * 8;
  pool.info.buf_size = len;
  memcpy(pool.raw + offsetof(struct rand_pool_info, buf), p, len);
  *step = "personalize: open /dev/urandom";
  int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  *step = "personalize: add the seed to the RNG";
  int r = ioctl(fd, RNDADDENTROPY, &pool.info);
  if (r == 0) {
    *step = "personalize: reseed the CRNG";
    r = ioctl(fd, RNDRESEEDCRNG);
  }
  int saved = errno;
  close(fd);
  errno = saved;
  return r < 0 ? -1 : 0;
}

/* /proc/sys/kernel/random/boot_id is read-only: bind-mount a file with the new id over it. */
static int set_boot_id(const unsigned char *p, const char **step) {
  static const char *target = "/proc/sys/kernel/random/boot_id", *file = "/run/vmf-boot_id";
  char text[37];
  memcpy(text, p, 36);
  text[36] = '\n';
  *step = "personalize: write the boot_id";
  int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0444);
  if (fd < 0) return -1;
  ssize_t n = write(fd, text, 37);
  int saved = errno;
  close(fd);
  errno = saved;
  if (n != 37) return -1;
  if (boot_id_mounted && umount2(target, MNT_DETACH) == 0) boot_id_mounted = 0;
  *step = "personalize: bind-mount the boot_id";
  if (!boot_id_mounted && mount(file, target, NULL, MS_BIND, NULL) < 0) return -1;
  boot_id_mounted = 1;
  return 0;
}

static int is_uuid(const unsigned char *p, size_t len) {
  if (len != 36) return 0;
  for (size_t i = 0; i < len; i++) {
    int dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? p[i] != '-' : !p[i] || !strchr("0123456789abcdef", p[i])) return 0;
  }
  return 1;
}

/* payload: u64 wall clock in ns since the epoch, then three (u32 length, bytes) fields: RNG seed
   (1 to 4096 bytes), hostname (1 to 64), boot_id (empty, or a lowercase UUID). Checks all of it,
   then seeds and reseeds the RNG, sets the clock, the hostname and the boot_id, and answers once,
   with what it reads back, only when every step succeeded (else an error naming the step). */
static void op_personalize(uint32_t id, const unsigned char *p, size_t len) {
  const unsigned char *end = p + len, *field[3];
  uint32_t flen[3];
  if (len < 8) return send_text_error(id, "personalize: malformed request");
  uint64_t ns = (uint64_t)get32(p) << 32 | get32(p + 4);
  p += 8;
  for (int i = 0; i < 3; i++) {
    if (end - p < 4 || get32(p) > (size_t)(end - p) - 4)
      return send_text_error(id, "personalize: malformed request");
    flen[i] = get32(p);
    field[i] = p + 4;
    p += 4 + flen[i];
  }
  if (p != end || flen[0] < 1 || flen[0] > 4096 || flen[1] < 1 || flen[1] > 64 ||
      memchr(field[1], 0, flen[1]) || (flen[2] && !is_uuid(field[2], flen[2])))
    return send_text_error(id, "personalize: malformed request");
  const char *step;
  if (seed_rng(field[0], flen[0], &step) < 0) return send_error(id, step);
  struct timespec ts = {.tv_sec = ns / 1000000000u, .tv_nsec = ns % 1000000000u};
  if (clock_settime(CLOCK_REALTIME, &ts) < 0) return send_error(id, "personalize: set the clock");
  if (sethostname((const char *)field[1], flen[1]) < 0)
    return send_error(id, "personalize: set the hostname");
  if (flen[2] && set_boot_id(field[2], &step) < 0) return send_error(id, step);

  char boot_id[64] = "", text[256];
  struct utsname u;
  struct timespec rt;
  uname(&u);
  clock_gettime(CLOCK_REALTIME, &rt);
  if (read_file("/proc/sys/kernel/random/boot_id", boot_id, sizeof boot_id) > 0)
    boot_id[strcspn(boot_id, "\n")] = 0;
  int n = snprintf(text, sizeof text, "reseeded=1\ntime_ns=%lld%09ld\nhostname=%s\nboot_id=%s\n",
                   (long long)rt.tv_sec, rt.tv_nsec, u.nodename, boot_id);
  send_frame(R_RESULT, id, text, n < 0 ? 0 : (size_t)n);
}

static uint32_t online_all(const char *dir, const char *prefix) {
  char path[300], state[8];
  uint32_t count = 0;
  DIR *d = opendir(dir);
  if (!d) return 0;
  for (struct dirent *e; (e = readdir(d));) {
    size_t pl = strlen(prefix);
    if (strncmp(e->d_name, prefix, pl) || e->d_name[pl] < '0' || e->d_name[pl] > '9') continue;
    snprintf(path, sizeof path, "%s/%s/online", dir, e->d_name);
    if (read_file(path, state, sizeof state) > 0 && state[0] == '0' && write_file(path, "1", 1) == 0)
      count++;
  }
  closedir(d);
  return count;
}

static void op_online_hotplugged(uint32_t id) {
  unsigned char r[8];
  put32(r, online_all("/sys/devices/system/cpu", "cpu"));
  put32(r + 4, online_all("/sys/devices/system/memory", "memory"));
  send_frame(R_RESULT, id, r, sizeof r);
}

static void handle(int type, uint32_t id, const unsigned char *p, size_t len) {
  switch (type) {
  case OP_PING: return send_frame(R_RESULT, id, p, len);
  case OP_INFO: return op_info(id);
  case OP_EXEC: return op_exec(id, p, len);
  case OP_PERSONALIZE: return op_personalize(id, p, len);
  case OP_ONLINE_HOTPLUGGED: return op_online_hotplugged(id);
  default: return send_text_error(id, "unknown operation");
  }
}

/* Decodes a COBS segment in place; returns the decoded length, or -1 when it is malformed. */
static long cobs_decode(unsigned char *p, size_t len) {
  size_t in = 0, out = 0;
  while (in < len) {
    unsigned code = p[in++];
    if (code == 0 || code - 1 > len - in) return -1;
    memmove(p + out, p + in, code - 1);
    out += code - 1;
    in += code - 1;
    if (code < 0xff && in < len) p[out++] = 0;
  }
  return out;
}

/* One request between two 0 bytes. A segment that is not one whole frame is dropped: what a
   host that left mid-request sent, or noise; one with a valid magic is answered with an error. */
static void handle_segment(unsigned char *p, size_t len) {
  long n = cobs_decode(p, len);
  if (n < HDR || get32(p) != MAGIC) return;
  uint32_t id = get32(p + 8);
  if (p[4] != VERSION || p[6] || p[7] || get32(p + 12) != (uint32_t)(n - HDR))
    return send_text_error(id, "malformed frame");
  handle(p[5], id, p + HDR, n - HDR);
}

/* Handles every segment in_buf completes and keeps the unfinished one (each byte is scanned for
   the delimiter once); a segment longer than any request is dropped up to its end. */
static void parse_input(void) {
  size_t start = 0;
  unsigned char *zero;
  while ((zero = memchr(in_buf + in_scanned, 0, in_len - in_scanned))) {
    size_t end = zero - in_buf;
    if (!in_discard && end > start) handle_segment(in_buf + start, end - start);
    in_discard = 0;
    start = in_scanned = end + 1;
  }
  memmove(in_buf, in_buf + start, in_len - start);
  in_len -= start;
  in_scanned = in_len;
  if (in_len > MAX_SEGMENT) in_len = in_scanned = 0, in_discard = 1;
}

/* Reads what the port has. EAGAIN means a host is connected; EOF means none is (the driver then
   has nothing unread and has been told the host closed; SIGIO woke us for it). Data can arrive
   before the guest learns that its host connected, so data alone says nothing, and an unfinished
   request is not dropped here: the next host may already have sent the start of its own. The 0
   byte that starts every request resynchronises instead (parse_input). */
static void read_port(void) {
  for (;;) {
    ssize_t n = read(port, in_buf + in_len, sizeof in_buf - in_len);
    if (n > 0) {
      in_len += n;
      parse_input();
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    host = n < 0 && errno == EAGAIN;
    if (host && out_len) flush_out();
    return;
  }
}

static void on_io(int sig) { (void)sig; got_io = 1; }
static void on_chld(int sig) { (void)sig; got_chld = 1; }

static int open_port(void) {
  char path[300], name[64];
  DIR *d = opendir("/sys/class/virtio-ports");
  if (!d) return -1;
  int fd = -1;
  for (struct dirent *e; fd < 0 && (e = readdir(d));) {
    snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
    if (read_file(path, name, sizeof name) <= 0 || strcmp(name, PORT_NAME "\n")) continue;
    snprintf(path, sizeof path, "/dev/%s", e->d_name);
    fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  }
  closedir(d);
  return fd;
}

int main(void) {
  sigset_t block, none;
  struct sigaction sa = {0};
  sigemptyset(&block);
  sigaddset(&block, SIGIO);
  sigaddset(&block, SIGCHLD);
  sigprocmask(SIG_BLOCK, &block, &none);
  sigdelset(&none, SIGIO);
  sigdelset(&none, SIGCHLD);
  sa.sa_handler = on_io;
  sigaction(SIGIO, &sa, NULL);
  sa.sa_handler = on_chld;
  sigaction(SIGCHLD, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin", 1);
  setenv("HOME", "/root", 1);

  for (unsigned delay = 5; (port = open_port()) < 0; delay = delay < 500 ? delay * 2 : 1000)
    usleep(delay * 1000); /* the port appears shortly after virtio_console loads */
  fcntl(port, F_SETOWN, getpid());
  fcntl(port, F_SETFL, fcntl(port, F_GETFL) | O_ASYNC | O_NONBLOCK);
  read_port();

  for (;;) {
    struct pollfd fds[1 + 3 * MAX_JOBS];
    struct job *owner[1 + 3 * MAX_JOBS];
    nfds_t nfds = 0;
    if (host) {
      owner[nfds] = NULL;
      fds[nfds++] = (struct pollfd){port, POLLIN | (out_len ? POLLOUT : 0), 0};
    }
    uint64_t now = now_ms(), next = 0;
    for (int i = 0; i < MAX_JOBS; i++) {
      struct job *j = &jobs[i];
      if (!j->used) continue;
      if (j->deadline && j->deadline <= now && !j->timed_out) {
        j->timed_out = 1;
        kill(-j->pid, SIGKILL);
      }
      if (j->deadline && !j->timed_out && (!next || j->deadline < next)) next = j->deadline;
      int room = out_len < BACKPRESSURE;
      if (j->out_fd >= 0 && room) owner[nfds] = j, fds[nfds++] = (struct pollfd){j->out_fd, POLLIN, 0};
      if (j->err_fd >= 0 && room) owner[nfds] = j, fds[nfds++] = (struct pollfd){j->err_fd, POLLIN, 0};
      if (j->in_fd >= 0) owner[nfds] = j, fds[nfds++] = (struct pollfd){j->in_fd, POLLOUT, 0};
    }
    struct timespec ts = {(next - now) / 1000, (next - now) % 1000 * 1000000};
    int r = ppoll(fds, nfds, next ? &ts : NULL, &none);
    if (got_chld) {
      got_chld = 0;
      reap();
    }
    if (got_io) {
      got_io = 0;
      read_port();
    }
    if (r <= 0) continue;
    for (nfds_t i = 0; i < nfds; i++) {
      if (!fds[i].revents) continue;
      struct job *j = owner[i];
      if (!j) {
        if (fds[i].revents & POLLOUT) flush_out();
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) read_port();
      } else if (j->used && fds[i].fd == j->out_fd) {
        pipe_output(j, &j->out_fd, R_STDOUT, 0);
      } else if (j->used && fds[i].fd == j->err_fd) {
        pipe_output(j, &j->err_fd, R_STDERR, 0);
      } else if (j->used && fds[i].fd == j->in_fd) {
        feed_stdin(j);
      }
    }
  }
}
