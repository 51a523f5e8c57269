/*
 * vmfactory guest agent. lib/guest/build_guest.ts compiles it with
 * "gcc -static -Os -s -Wall -Wextra -Werror" into the initrd. The bundled tool carries it as the
 * string in lib/guest/agent_source.ts: after editing this file, regenerate that module with
 * "scripts/deno run -A scripts/gen_agent_source.ts" (lib/guest/agent_source_test.ts checks it).
 *
 * Serves the host on the virtio-serial port named "org.vmfactory.agent". Frames (big-endian):
 * u32 magic "VMFA", u8 version 2, u8 type, u16 flags, u32 request id, u32 payload length,
 * payload (at most 1 MiB). lib/guest/agent_frame.ts and agent_payload.ts are the host side.
 * Answers go out as plain frames (flags 0). Requests come in COBS-encoded, each between two 0
 * bytes: hosts connect one after another, and one may leave a request unfinished (killed
 * mid-write) without the agent seeing it leave (QEMU's close and open notices can arrive
 * together, or after the next host's data); the 0 that starts the next request ends the
 * unfinished one, which then fails to decode to a whole frame and is dropped. No request is ever
 * read as the rest of another's. A host marks its first request FLAG_NEW_SESSION: the commands
 * earlier hosts started are theirs no more (their output and exit are dropped; one whose streamed
 * stdin can never end now is killed).
 *
 * Commands run with flow control both ways. Output: the host grants each exec a window and
 * returns credit (OP_CREDIT) as it consumes output; each stdout or stderr frame costs its
 * payload plus FRAME_COST bytes of it (so tiny frames cannot pile up on the host). While a
 * command's credit is spent the agent stops reading its pipes: a slow host stalls only it.
 * Streamed stdin (OP_STDIN chunks, the last one flagged STDIN_EOF): the host keeps at most
 * STDIN_WINDOW bytes unacknowledged; the agent writes them to the pipe without blocking and
 * acknowledges what it wrote (R_STDIN_ACK), so it never holds more than that per command.
 * OP_STDIN, OP_CREDIT and OP_CANCEL name the exec by its request id and are not answered.
 * Waits for hot-plugged devices (mountImage, configureNet) do not block either: they are retried
 * on each kernel uevent (and every RESCAN_MS) until their device appears or their deadline passes.
 * mountImage with the serial CD_SERIAL mounts the medium of the VM's CD drive instead (a
 * virtio-scsi CD, present from boot; the host inserts the image): it waits for the medium alike.
 *
 * Idle costs nothing: while no host is connected the port reads EOF and polls HUP at once, so
 * the agent leaves it out of ppoll() and sleeps with SIGIO unblocked; the virtio_console driver
 * sends SIGIO (F_SETOWN + O_ASYNC) when the host connects or disconnects and when data arrives.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/netlink.h>
#include <linux/random.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <netinet/in.h>
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
#include <sys/socket.h>
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
#define FLAG_NEW_SESSION 1
#define MAX_JOBS 16
#define CHUNK 65536
#define BACKPRESSURE (256u * 1024)
#define STDIN_WINDOW (256u * 1024) /* stdin bytes of one command held or not yet acknowledged */
#define FRAME_COST 256u            /* output credit an output frame costs beyond its payload */
#define AFTER_EXIT (1u << 20)      /* output still read from a command's pipes once it exited */
#define MAX_LIST 4096              /* arguments, environment entries */
#define MAX_PATH_TEXT 4095
#define MAX_USER 255
#define MAX_DB (1u << 20) /* bytes of /etc/passwd or /etc/group read */
#define MAX_NAME 64       /* an image name */
#define MAX_SERIAL 20     /* a virtio disk serial */
#define CD_SERIAL "cd"    /* mountImage's serial for the medium of the CD drive */
#define BUILTIN_NIC_MAC "02:00:00:00:00:00" /* the NIC every VM has from boot, until addressed */
#define MAX_WAITERS 8
#define MAX_WAIT_MS 600000u
#define RESCAN_MS 50
#ifndef RNDRESEEDCRNG
#define RNDRESEEDCRNG _IO('R', 0x07) /* Linux 4.17; older C headers lack the name */
#endif

enum {
  OP_PING = 1, OP_INFO, OP_EXEC, OP_PERSONALIZE, OP_ONLINE_HOTPLUGGED, OP_STDIN, OP_CREDIT,
  OP_CANCEL, OP_MOUNT_IMAGE, OP_UNMOUNT_IMAGE, OP_CONFIGURE_NET
};
enum { R_RESULT = 0x80, R_STDOUT, R_STDERR, R_EXIT, R_STDIN_ACK, R_ERROR = 0xff };
enum { EXEC_SHELL = 1, EXEC_STDIN_STREAM = 2, EXEC_ENV = 4 };
enum { STDIN_EOF = 1 };
enum { ACK_CLOSED = 1 };

struct job {
  int used, out_fd, err_fd, in_fd, status_fd; /* status_fd: why the command could not start */
  int timed_out, truncated, exited, status;
  int stream, eof; /* stdin comes in OP_STDIN chunks; the last one came */
  int orphan;      /* the host wants nothing more: output and exit are dropped */
  uint32_t id, limit, window, credit; /* window 0: output is not metered */
  pid_t pid;
  unsigned char *in_buf;
  size_t in_off, in_len, unacked;
  uint64_t sent, after_exit, deadline; /* deadline in CLOCK_MONOTONIC ms, 0 = none */
};

/* A mountImage or configureNet waiting for its device. */
struct waiter {
  int op; /* 0: a free slot */
  uint32_t id, wait_ms;
  uint64_t deadline, size;                  /* size: bytes of the image's writable layer */
  char key[24], name[MAX_NAME + 1];         /* disk serial or MAC; image name ("" none) */
  uint32_t addr, prefix, gateway, ndns, dns[3]; /* IPv4, host order */
};

static int port = -1, host; /* host: a host is connected to the port */
static volatile sig_atomic_t got_io, got_chld;
static unsigned char in_buf[MAX_SEGMENT + CHUNK]; /* bytes since the last 0 delimiter */
static size_t in_len, in_scanned;                  /* in_scanned: bytes known to hold no 0 */
static int in_discard;                             /* the segment is too long: drop up to its 0 */
static unsigned char *out_buf;
static size_t out_len, out_cap;
static struct job jobs[MAX_JOBS];
static struct waiter waiters[MAX_WAITERS];
static int uevent_fd = -1;
static uint64_t last_scan;
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

/* Queues a frame. While no host is connected, frames wait for the next one (clients ignore ids
   they did not send). */
static void send_frame(int type, uint32_t id, const void *data, size_t len) {
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

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* ---- request fields ---- */

/* Reads the fields of a request payload; a read past its end marks it bad. */
struct reader {
  const unsigned char *p, *end;
  int bad;
};

static uint32_t take32(struct reader *r) {
  if (r->end - r->p < 4) { r->bad = 1; return 0; }
  uint32_t v = get32(r->p);
  r->p += 4;
  return v;
}
/* A (u32 length, bytes) field; NULL when it runs past the end. */
static const unsigned char *take_bytes(struct reader *r, uint32_t *len) {
  *len = take32(r);
  if (r->bad || *len > (size_t)(r->end - r->p)) { r->bad = 1; *len = 0; return NULL; }
  const unsigned char *b = r->p;
  r->p += *len;
  return b;
}
/* A (u32 length, text) field of at most `max` bytes and no NUL, copied NUL-terminated to `out`. */
static void take_text(struct reader *r, char *out, size_t max) {
  uint32_t len;
  const unsigned char *b = take_bytes(r, &len);
  if (!b || len > max || memchr(b, 0, len)) { r->bad = 1; len = 0; }
  if (len) memcpy(out, b, len);
  out[len] = 0;
}
static void free_list(char **list, int skip) {
  if (!list) return;
  for (char **s = list + skip; *s; s++) free(*s);
  free(list);
}
/* `count` (u32 length, text) fields as a NULL-terminated array after `skip` free slots; each
   entry "K=V" when `env`. NULL (the reader marked bad) when malformed or out of memory. */
static char **take_list(struct reader *r, uint32_t count, int skip, int env) {
  char **list = r->bad || count > MAX_LIST ? NULL : calloc(count + skip + 1, sizeof *list);
  for (uint32_t i = 0; list && i < count && !r->bad; i++) {
    uint32_t len;
    const unsigned char *b = take_bytes(r, &len);
    if (!b || memchr(b, 0, len) || (env && (!len || b[0] == '=' || !memchr(b, '=', len))))
      r->bad = 1;
    else if (!(list[skip + i] = strndup((const char *)b, len)))
      r->bad = 1;
  }
  if (!list || r->bad) {
    free_list(list, skip);
    r->bad = 1;
    return NULL;
  }
  return list;
}
/* 1 to `max` characters of [A-Za-z0-9_-]: a name that is one path component, never "." or "..". */
static int is_name(const char *s, size_t max) {
  size_t n = strlen(s);
  return n >= 1 && n <= max &&
         strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

/* ---- exec ---- */

/* What the child does before it runs the command. */
struct spawn {
  char **argv, **envp; /* envp NULL: the agent's environment */
  char cwd[MAX_PATH_TEXT + 1], user[MAX_USER + 1], root[MAX_PATH_TEXT + 1]; /* "": unchanged */
};

/* In the child: says on the status pipe why the command cannot start, and exits. */
static void die(int status_fd, const char *what, const char *arg, int err) {
  if (err) dprintf(status_fd, "exec: %s %s: %s", what, arg, strerror(err));
  else dprintf(status_fd, "exec: %s %s", what, arg);
  _exit(127);
}

/* A decimal id: 1 to 10 digits, below 2^32 - 1; else -1. */
static long long decimal_id(const char *s) {
  size_t n = strlen(s);
  if (n < 1 || n > 10 || strspn(s, "0123456789") != n) return -1;
  long long v = strtoll(s, NULL, 10);
  return v < 0xffffffffLL ? v : -1;
}

/* Finds the line of a passwd or group file (its first MAX_DB bytes) whose name, or whose id
   (field 3) when `by_id`, is `key`; gives its fields 3 and 4 as ids (-1 when not one). Returns 0
   when found, 1 when not, -1 (errno set) when the file cannot be read. */
static int db_find(const char *path, const char *key, int by_id, long long ids[2]) {
  static char buf[MAX_DB + 1];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t len = 0;
  ssize_t n = 0;
  while (len < MAX_DB && (n = read(fd, buf + len, MAX_DB - len)) > 0) len += n;
  int saved = errno;
  close(fd);
  errno = saved;
  if (n < 0) return -1;
  buf[len] = 0;
  for (char *line = buf, *next; line; line = next) {
    if ((next = strchr(line, '\n'))) *next++ = 0;
    char *f[4] = {0};
    int nf = 0;
    for (char *s = line; s && nf < 4; nf++) {
      f[nf] = s;
      if ((s = strchr(s, ':'))) *s++ = 0;
    }
    if (nf < 3 || strcmp(by_id ? f[2] : f[0], key)) continue;
    ids[0] = decimal_id(f[2]);
    ids[1] = nf > 3 ? decimal_id(f[3]) : -1;
    return 0;
  }
  return 1;
}

/* In the child, inside its root: the ids of "name", "uid", "name:group" or "uid:gid". A uid
   without a passwd line gets gid 0; a name must have one. */
static void resolve_user(int status_fd, char *spec, uid_t *uid, gid_t *gid) {
  char *group = strchr(spec, ':');
  if (group) *group++ = 0;
  long long ids[2] = {-1, -1}, u = decimal_id(spec), g;
  int r = db_find("/etc/passwd", spec, u >= 0, ids);
  if (u < 0) {
    if (r < 0) die(status_fd, "read /etc/passwd for user", spec, errno);
    if (r > 0 || ids[0] < 0) die(status_fd, "no such user in /etc/passwd:", spec, 0);
    u = ids[0];
  }
  g = r == 0 && ids[1] >= 0 ? ids[1] : 0;
  if (group && (g = decimal_id(group)) < 0) {
    r = db_find("/etc/group", group, 0, ids);
    if (r < 0) die(status_fd, "read /etc/group for group", group, errno);
    if (r > 0 || ids[0] < 0) die(status_fd, "no such group in /etc/group:", group, 0);
    g = ids[0];
  }
  *uid = u;
  *gid = g;
}

/* The child: chroot(root), then the user's ids (no supplementary groups), chdir(cwd), exec. */
static void run_child(struct spawn *s, int in_fd, int out_fd, int err_fd, int status_fd) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGPIPE, SIG_DFL);
  setsid();
  int nul = open("/dev/null", O_RDWR);
  dup2(in_fd >= 0 ? in_fd : nul, 0);
  dup2(out_fd, 1);
  dup2(err_fd, 2);
  if (nul > 2) close(nul);
  if (s->root[0] && (chroot(s->root) < 0 || chdir("/") < 0)) die(status_fd, "chroot", s->root, errno);
  if (s->user[0]) {
    uid_t uid;
    gid_t gid;
    char spec[MAX_USER + 1];
    memcpy(spec, s->user, sizeof spec);
    resolve_user(status_fd, spec, &uid, &gid);
    if (setgroups(0, NULL) < 0 || setgid(gid) < 0) die(status_fd, "setgid for user", s->user, errno);
    if (setuid(uid) < 0) die(status_fd, "setuid for user", s->user, errno);
  }
  if (s->cwd[0] && chdir(s->cwd) < 0) die(status_fd, "chdir", s->cwd, errno);
  if (s->envp) environ = s->envp; /* execvp searches the command's own PATH */
  execvp(s->argv[0], s->argv);
  die(status_fd, "cannot run", s->argv[0], errno);
}

static void finish_job(struct job *j) {
  unsigned char exitp[10];
  int status = j->status;
  close_fd(&j->out_fd);
  close_fd(&j->err_fd);
  close_fd(&j->in_fd);
  close_fd(&j->status_fd);
  free(j->in_buf);
  if (!j->orphan) {
    put32(exitp, WIFEXITED(status) ? (uint32_t)WEXITSTATUS(status) : 0xffffffffu);
    put32(exitp + 4, WIFSIGNALED(status) ? (uint32_t)WTERMSIG(status) : 0);
    exitp[8] = j->truncated;
    exitp[9] = j->timed_out;
    send_frame(R_EXIT, j->id, exitp, sizeof exitp);
  }
  memset(j, 0, sizeof *j);
}

/* Reads one chunk of an output pipe and sends it, within the job's credit when it is metered.
   Returns 1 when it read bytes, 0 when the pipe had none (EAGAIN; at EOF it is closed), -1 when
   the job's credit does not cover another frame. Output beyond the limit is dropped; so is all of it for an orphan
   and, while no host is connected, for an unmetered job. */
static int pipe_output(struct job *j, int *fd, int type) {
  static unsigned char buf[CHUNK];
  int metered = j->window && !j->orphan && j->sent < j->limit;
  size_t want = sizeof buf;
  if (metered && j->credit <= FRAME_COST) return -1;
  if (metered && j->credit - FRAME_COST < want) want = j->credit - FRAME_COST;
  ssize_t n;
  do n = read(*fd, buf, want); while (n < 0 && errno == EINTR);
  if (n <= 0) {
    if (n == 0 || errno != EAGAIN) close_fd(fd);
    return 0;
  }
  if (j->exited) j->after_exit += n;
  size_t keep = n;
  if (j->sent + keep > j->limit) {
    keep = j->sent < j->limit ? j->limit - j->sent : 0;
    j->truncated = 1;
  }
  if (keep && !j->orphan && (j->window || host)) send_frame(type, j->id, buf, keep);
  j->sent += keep;
  if (metered && keep) j->credit -= keep + FRAME_COST;
  return 1;
}

/* Once the command exited: sends what its pipes still hold (at most AFTER_EXIT bytes: what a
   process it left behind writes later is not waited for) as credit allows, then its exit. */
static void settle(struct job *j) {
  int *fds[2] = {&j->out_fd, &j->err_fd};
  for (int i = 0; i < 2; i++) {
    int r = 0;
    while (*fds[i] >= 0 && j->after_exit < AFTER_EXIT &&
           (r = pipe_output(j, fds[i], i ? R_STDERR : R_STDOUT)) > 0) {
    }
    if (r < 0) return; /* OP_CREDIT resumes it */
    close_fd(fds[i]);
  }
  finish_job(j);
}

/* The host wants nothing more from the job: what it still sends is dropped. */
static void orphan_job(struct job *j, int kill_it) {
  if (kill_it && !j->exited) kill(-j->pid, SIGKILL), kill(j->pid, SIGKILL); /* before setsid too */
  j->orphan = 1;
  if (j->exited) settle(j);
}

static void fail_job(struct job *j, const char *msg) {
  send_text_error(j->id, msg);
  orphan_job(j, 1);
}

/* The child's status pipe: EOF once the command runs, or why it could not start. */
static void read_status(struct job *j) {
  char msg[400];
  ssize_t n;
  do n = read(j->status_fd, msg, sizeof msg); while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) return;
  close_fd(&j->status_fd);
  if (n > 0) {
    send_frame(R_ERROR, j->id, msg, n);
    orphan_job(j, 0);
  }
}

static void ack_stdin(struct job *j, uint32_t flags) {
  unsigned char ack[8];
  put32(ack, j->unacked);
  put32(ack + 4, flags);
  j->unacked = 0;
  if (!j->orphan) send_frame(R_STDIN_ACK, j->id, ack, sizeof ack);
}

/* Writes buffered stdin to the command without blocking; closes its pipe once the input ended
   and is written. Streamed stdin is acknowledged as it is written: each time the buffer empties,
   and every quarter window. */
static void feed_stdin(struct job *j) {
  while (j->in_off < j->in_len) {
    ssize_t n = write(j->in_fd, j->in_buf + j->in_off, j->in_len - j->in_off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) { /* EPIPE: the command closed its stdin; what comes later is dropped */
      close_fd(&j->in_fd);
      j->in_off = j->in_len = 0;
      if (j->stream) ack_stdin(j, ACK_CLOSED);
      return;
    }
    j->in_off += n;
    j->unacked += n;
  }
  if (j->in_off == j->in_len) {
    j->in_off = j->in_len = 0;
    if (!j->stream || j->eof) close_fd(&j->in_fd);
  }
  if (j->stream && j->unacked && (!j->in_len || j->unacked >= STDIN_WINDOW / 4)) ack_stdin(j, 0);
}

static void reap(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
    for (int i = 0; i < MAX_JOBS; i++) {
      struct job *j = &jobs[i];
      if (!j->used || j->exited || j->pid != pid) continue;
      j->exited = 1;
      j->status = status;
      if (j->status_fd >= 0) read_status(j);
      close_fd(&j->in_fd);
      settle(j);
    }
}

/* payload: u32 flags (EXEC_*), u32 timeout ms (0 = none), u32 output limit (bytes of stdout and
   stderr together), u32 output window (0 = not metered), u32 argc, argc x (u32 len, bytes),
   u32 envc, envc x (u32 len, "K=V") (none unless EXEC_ENV: then the whole environment), three
   (u32 len, text) fields: cwd, user, root (empty: unchanged), u32 stdin length, stdin bytes (at
   most STDIN_WINDOW; none with EXEC_STDIN_STREAM, whose stdin comes in OP_STDIN frames). */
static void op_exec(uint32_t id, const unsigned char *p, size_t len) {
  static struct spawn s;
  struct reader r = {p, p + len, 0};
  struct job *j = NULL;
  for (int i = 0; i < MAX_JOBS; i++)
    if (!jobs[i].used) { j = &jobs[i]; break; }
  if (!j) return send_text_error(id, "exec: too many running commands");
  uint32_t flags = take32(&r), timeout = take32(&r), limit = take32(&r), window = take32(&r);
  uint32_t argc = take32(&r), envc = 0, in_len = 0;
  int skip = flags & EXEC_SHELL ? 2 : 0, stream = (flags & EXEC_STDIN_STREAM) != 0;
  char **argv = argc ? take_list(&r, argc, skip, 0) : NULL, **envp = NULL;
  if (!r.bad) envc = take32(&r), envp = take_list(&r, envc, 0, 1);
  take_text(&r, s.cwd, MAX_PATH_TEXT);
  take_text(&r, s.user, MAX_USER);
  take_text(&r, s.root, MAX_PATH_TEXT);
  const unsigned char *in = take_bytes(&r, &in_len);
  char *group = strchr(s.user, ':');
  if (r.bad || r.p != r.end || !argv || flags > 7 || (envc && !(flags & EXEC_ENV)) ||
      (stream && in_len) || (s.cwd[0] && s.cwd[0] != '/') || (s.root[0] && s.root[0] != '/') ||
      (group && (group == s.user || !group[1] || strchr(group + 1, ':')))) {
    send_text_error(id, "exec: malformed request");
    goto done;
  }
  if (in_len > STDIN_WINDOW) {
    send_text_error(id, "exec: more than 262144 bytes of stdin must be streamed");
    goto done;
  }
  if (skip) argv[0] = "/bin/sh", argv[1] = "-c";
  int out[2] = {-1, -1}, err[2] = {-1, -1}, st[2] = {-1, -1}, pin[2] = {-1, -1};
  unsigned char *buf = stream || in_len ? malloc(stream ? STDIN_WINDOW : in_len) : NULL;
  if (((stream || in_len) && !buf) || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
      pipe2(st, O_CLOEXEC) < 0 || ((stream || in_len) && pipe2(pin, O_CLOEXEC) < 0)) {
    send_error(id, "exec: pipe");
    for (int i = 0; i < 2; i++) close_fd(&out[i]), close_fd(&err[i]), close_fd(&st[i]), close_fd(&pin[i]);
    free(buf);
    goto done;
  }
  s.argv = argv;
  s.envp = flags & EXEC_ENV ? envp : NULL;
  pid_t pid = fork();
  if (pid == 0) run_child(&s, pin[0], out[1], err[1], st[1]);
  close_fd(&out[1]);
  close_fd(&err[1]);
  close_fd(&st[1]);
  close_fd(&pin[0]);
  if (pid < 0) {
    send_error(id, "exec: fork");
    close_fd(&out[0]); close_fd(&err[0]); close_fd(&st[0]); close_fd(&pin[1]);
    free(buf);
    goto done;
  }
  memset(j, 0, sizeof *j);
  j->used = 1;
  j->id = id;
  j->pid = pid;
  j->out_fd = out[0];
  j->err_fd = err[0];
  j->status_fd = st[0];
  j->in_fd = pin[1];
  fcntl(j->out_fd, F_SETFL, O_NONBLOCK);
  fcntl(j->err_fd, F_SETFL, O_NONBLOCK);
  fcntl(j->status_fd, F_SETFL, O_NONBLOCK);
  j->in_buf = buf;
  j->stream = stream;
  j->limit = limit;
  j->window = j->credit = window;
  j->deadline = timeout ? now_ms() + timeout : 0;
  if (j->in_fd >= 0) {
    fcntl(j->in_fd, F_SETFL, O_NONBLOCK);
    if (in_len) memcpy(buf, in, in_len), j->in_len = in_len;
    feed_stdin(j);
  }
done:
  free_list(argv, skip);
  free_list(envp, 0);
}

/* A running exec of this host by its id. */
static struct job *find_job(uint32_t id) {
  for (int i = 0; i < MAX_JOBS; i++)
    if (jobs[i].used && !jobs[i].orphan && jobs[i].id == id) return &jobs[i];
  return NULL;
}

/* payload: u32 flags (STDIN_EOF: the last chunk), bytes. Dropped once the command closed its
   stdin or exited; beyond the window, the command is killed and the exec fails. */
static void op_stdin(uint32_t id, const unsigned char *p, size_t len) {
  struct job *j = find_job(id);
  if (!j) return;
  if (!j->stream || len < 4 || get32(p) > STDIN_EOF) return fail_job(j, "exec: malformed stdin");
  if (j->eof) return fail_job(j, "exec: stdin after its end");
  size_t live = j->in_len - j->in_off;
  len -= 4;
  if (live + j->unacked + len > STDIN_WINDOW) return fail_job(j, "exec: stdin beyond its window");
  j->eof = get32(p) & STDIN_EOF;
  if (j->in_fd < 0) return;
  if (j->in_len + len > STDIN_WINDOW) {
    memmove(j->in_buf, j->in_buf + j->in_off, live);
    j->in_off = 0;
    j->in_len = live;
  }
  memcpy(j->in_buf + j->in_len, p + 4, len);
  j->in_len += len;
  feed_stdin(j);
}

/* payload: u32 bytes of output the host consumed since it last said. */
static void op_credit(uint32_t id, const unsigned char *p, size_t len) {
  struct job *j = find_job(id);
  if (!j) return;
  if (!j->window || len != 4) return fail_job(j, "exec: malformed credit");
  uint64_t credit = (uint64_t)j->credit + get32(p);
  j->credit = credit > j->window ? j->window : credit;
  if (j->exited) settle(j);
}

/* The host gave up on the exec: its process group is killed, its output and exit dropped. */
static void op_cancel(uint32_t id) {
  struct job *j = find_job(id);
  if (j) orphan_job(j, 1);
}

/* The first request of a host: the jobs of earlier hosts are theirs no more. */
static void new_session(void) {
  for (int i = 0; i < MAX_JOBS; i++) {
    struct job *j = &jobs[i];
    if (j->used && !j->orphan) orphan_job(j, j->stream && !j->eof && j->in_fd >= 0);
  }
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

/* /proc/sys/kernel/random/boot_id is read-only: a file holding it is bind-mounted over it once,
   when the agent starts, and a new id is written into that file. A template's clones inherit the
   mount, so personalizing one mounts nothing (mount code is cold in a fresh clone: ~35 ms under
   TCG) and truncates nothing (the id is rewritten in place at the same length). */
static const char *boot_id_target = "/proc/sys/kernel/random/boot_id",
                  *boot_id_file = "/run/vmf-boot_id";

static int mount_boot_id(void) {
  struct stat a, b;
  if (stat(boot_id_target, &a) == 0 && stat(boot_id_file, &b) == 0 && a.st_dev == b.st_dev &&
      a.st_ino == b.st_ino)
    return 0; /* an earlier agent mounted it */
  char text[64];
  if (read_file(boot_id_target, text, sizeof text) != 37) return -1;
  int fd = open(boot_id_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0444);
  if (fd < 0) return -1;
  ssize_t n = write(fd, text, 37);
  int saved = errno;
  close(fd);
  errno = saved;
  if (n != 37) return -1;
  return mount(boot_id_file, boot_id_target, NULL, MS_BIND, NULL);
}

static int set_boot_id(const unsigned char *p, const char **step) {
  char text[37];
  memcpy(text, p, 36);
  text[36] = '\n';
  *step = "personalize: bind-mount the boot_id";
  if (!boot_id_mounted && mount_boot_id() < 0) return -1;
  boot_id_mounted = 1;
  *step = "personalize: write the boot_id";
  int fd = open(boot_id_file, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = pwrite(fd, text, 37, 0);
  int saved = errno;
  close(fd);
  errno = saved;
  return n == 37 ? 0 : -1;
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

/* ---- hot-plugged images and NICs ---- */

/* Writes `text` to `name` in the directory `dirfd`, never through a symbolic link. */
static int write_at(int dirfd, const char *name, const char *text, int flags) {
  int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | flags, 0644);
  if (fd < 0) return -1;
  size_t len = strlen(text);
  ssize_t n = len ? write(fd, text, len) : 0;
  int saved = errno;
  close(fd);
  errno = saved;
  return n == (ssize_t)len ? 0 : -1;
}

/* Makes `name` in `dirfd` a regular file: kept when it is one, else replaced (a symbolic link,
   say, into a /run the image does not have) by a new one holding `text`. */
static int regular_file(int dirfd, const char *name, const char *text) {
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISREG(st.st_mode)) return 0;
    if (unlinkat(dirfd, name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) < 0) return -1;
  }
  return write_at(dirfd, name, text, O_EXCL);
}

/* Mounts on the directory `name` in `dirfd` (made when missing, replacing what is not a
   directory), through /proc/self/fd so that no symbolic link in the image is followed. */
static int mount_at(int dirfd, const char *name, const char *src, const char *type,
                    unsigned long flags, const char *data) {
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode) &&
      unlinkat(dirfd, name, 0) < 0)
    return -1;
  if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST) return -1;
  int fd = openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -1;
  char path[32];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int r = mount(src, path, type, flags, data);
  int saved = errno;
  close(fd);
  errno = saved;
  return r;
}

/* Lazily unmounts an image's overlay (its proc, sys, dev and tmp with it), writable layer and
   erofs, and removes its folders; what is not there is skipped. */
static void unmount_image(const char *name) {
  static const char *parts[] = {"root", "rw", "lower"};
  char path[128];
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "/run/vmf/%s/%s", name, parts[i]);
    umount2(path, MNT_DETACH);
    rmdir(path);
  }
  snprintf(path, sizeof path, "/run/vmf/%s", name);
  rmdir(path);
}

/* The erofs disk `dev` read-only at /run/vmf/<name>/lower, a tmpfs of `size` bytes at rw (upper +
   work), the overlay at root with proc, sys, dev and a tmpfs tmp in it, and /etc/resolv.conf and
   /etc/hosts regular files there. Answers "root=...\ndevice=...\n"; undoes it all on failure. */
static void mount_image(const struct waiter *w, const char *dev) {
  static const char *hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
  char base[96], lower[112], rw[112], root[112], opts[512], step[160];
  int rootfd = -1, etcfd = -1;
  snprintf(base, sizeof base, "/run/vmf/%s", w->name);
  snprintf(lower, sizeof lower, "%s/lower", base);
  snprintf(rw, sizeof rw, "%s/rw", base);
  snprintf(root, sizeof root, "%s/root", base);
  mkdir("/run/vmf", 0755);
  if (mkdir(base, 0755) < 0) {
    if (errno != EEXIST) return send_error(w->id, "mountImage: create /run/vmf/<name>");
    snprintf(step, sizeof step, "mountImage: an image named %s is mounted already", w->name);
    return send_text_error(w->id, step);
  }
  snprintf(step, sizeof step, "mountImage: create the folders in %s", base);
  if (mkdir(lower, 0755) < 0 || mkdir(rw, 0755) < 0 || mkdir(root, 0755) < 0) goto fail;
  snprintf(step, sizeof step, "mountImage: mount %s read-only as erofs", dev);
  if (mount(dev, lower, "erofs", MS_RDONLY, NULL) < 0) goto fail;
  snprintf(step, sizeof step, "mountImage: mount the writable tmpfs of %llu bytes",
           (unsigned long long)w->size);
  snprintf(opts, sizeof opts, "size=%llu,mode=0755", (unsigned long long)w->size);
  if (mount("tmpfs", rw, "tmpfs", 0, opts) < 0) goto fail;
  int rwfd = open(rw, O_DIRECTORY | O_CLOEXEC);
  int made = rwfd >= 0 && mkdirat(rwfd, "upper", 0755) == 0 && mkdirat(rwfd, "work", 0755) == 0;
  if (rwfd >= 0) close(rwfd);
  if (!made) goto fail;
  snprintf(step, sizeof step, "mountImage: mount the overlay on %s", root);
  snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s/upper,workdir=%s/work", lower, rw, rw);
  if (mount("overlay", root, "overlay", 0, opts) < 0) goto fail;
  snprintf(step, sizeof step, "mountImage: open %s", root);
  if ((rootfd = open(root, O_DIRECTORY | O_CLOEXEC)) < 0) goto fail;
  snprintf(step, sizeof step, "mountImage: mount proc, sys, dev and tmp in the image");
  snprintf(opts, sizeof opts, "size=%llu,mode=1777", (unsigned long long)w->size);
  if (mount_at(rootfd, "proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 ||
      mount_at(rootfd, "sys", "sysfs", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 ||
      mount_at(rootfd, "dev", "devtmpfs", "devtmpfs", MS_NOSUID | MS_NOEXEC, NULL) < 0 ||
      mount_at(rootfd, "tmp", "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
    goto fail;
  snprintf(step, sizeof step, "mountImage: make /etc/resolv.conf and /etc/hosts regular files");
  if ((mkdirat(rootfd, "etc", 0755) < 0 && errno != EEXIST) ||
      (etcfd = openat(rootfd, "etc", O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 ||
      regular_file(etcfd, "resolv.conf", "") < 0 || regular_file(etcfd, "hosts", hosts) < 0)
    goto fail;
  close(etcfd);
  close(rootfd);
  snprintf(opts, sizeof opts, "root=%s\ndevice=%s\n", root, dev);
  return send_frame(R_RESULT, w->id, opts, strlen(opts));
fail:;
  int saved = errno;
  if (etcfd >= 0) close(etcfd);
  if (rootfd >= 0) close(rootfd);
  unmount_image(w->name);
  errno = saved;
  send_error(w->id, step);
}

static int set_addr(int s, const char *ifname, unsigned long request, uint32_t addr) {
  struct ifreq ifr = {0};
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(addr)};
  strcpy(ifr.ifr_name, ifname);
  memcpy(&ifr.ifr_addr, &sin, sizeof sin);
  return ioctl(s, request, &ifr);
}
static int set_up(int s, const char *ifname) {
  struct ifreq ifr = {0};
  strcpy(ifr.ifr_name, ifname);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) return -1;
  ifr.ifr_flags |= IFF_UP;
  return ioctl(s, SIOCSIFFLAGS, &ifr);
}

/* Writes resolv.conf (when DNS servers were given) into the guest's /etc and the named image's,
   brings lo and `ifname` up with the address, and replaces the default route. Answers
   "interface=<name>\n". */
static void configure_net(const struct waiter *w, const char *ifname) {
  char text[160] = "", step[160];
  int s = -1, etcs[2] = {-1, -1};
  for (uint32_t i = 0, at = 0; i < w->ndns; i++) {
    uint32_t a = w->dns[i];
    at += snprintf(text + at, sizeof text - at, "nameserver %u.%u.%u.%u\n", a >> 24, a >> 16 & 255,
                   a >> 8 & 255, a & 255);
  }
  snprintf(step, sizeof step, "configureNet: open /etc");
  if ((etcs[0] = open("/etc", O_DIRECTORY | O_CLOEXEC)) < 0) goto fail;
  if (w->name[0]) {
    snprintf(step, sizeof step, "configureNet: open /etc of the image %s", w->name);
    char path[128];
    snprintf(path, sizeof path, "/run/vmf/%s/root", w->name);
    int rootfd = open(path, O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0) goto fail;
    etcs[1] = openat(rootfd, "etc", O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(rootfd);
    if (etcs[1] < 0) goto fail;
  }
  snprintf(step, sizeof step, "configureNet: write resolv.conf");
  for (int i = 0; i < 2 && w->ndns; i++)
    if (etcs[i] >= 0 && write_at(etcs[i], "resolv.conf", text, O_TRUNC) < 0) goto fail;
  snprintf(step, sizeof step, "configureNet: socket");
  if ((s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) goto fail;
  snprintf(step, sizeof step, "configureNet: bring lo up");
  if (set_up(s, "lo") < 0) goto fail;
  snprintf(step, sizeof step, "configureNet: set the address of %s", ifname);
  uint32_t mask = w->prefix ? 0xffffffffu << (32 - w->prefix) : 0;
  if (set_addr(s, ifname, SIOCSIFADDR, w->addr) < 0 || set_addr(s, ifname, SIOCSIFNETMASK, mask) < 0)
    goto fail;
  snprintf(step, sizeof step, "configureNet: bring %s up", ifname);
  if (set_up(s, ifname) < 0) goto fail;
  if (w->gateway) {
    struct rtentry rt = {0};
    struct sockaddr_in any = {.sin_family = AF_INET};
    struct sockaddr_in gw = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(w->gateway)};
    char dev[IFNAMSIZ];
    memcpy(&rt.rt_dst, &any, sizeof any);
    memcpy(&rt.rt_genmask, &any, sizeof any);
    rt.rt_flags = RTF_UP;
    for (int i = 0; i < 16 && ioctl(s, SIOCDELRT, &rt) == 0; i++) {} /* the old default routes */
    memcpy(&rt.rt_gateway, &gw, sizeof gw);
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    strcpy(dev, ifname);
    rt.rt_dev = dev;
    snprintf(step, sizeof step, "configureNet: add the default route");
    if (ioctl(s, SIOCADDRT, &rt) < 0) goto fail;
  }
  close(s);
  for (int i = 0; i < 2; i++) close_fd(&etcs[i]);
  snprintf(text, sizeof text, "interface=%s\n", ifname);
  return send_frame(R_RESULT, w->id, text, strlen(text));
fail:;
  int saved = errno;
  if (s >= 0) close(s);
  for (int i = 0; i < 2; i++) close_fd(&etcs[i]);
  errno = saved;
  send_error(w->id, step);
}

/* The /dev node of the virtio disk whose serial is `serial`, once the node exists. */
static int find_disk(const char *serial, char *dev, size_t cap) {
  char path[300], text[64];
  int found = 0;
  DIR *d = opendir("/sys/block");
  for (struct dirent *e; d && !found && (e = readdir(d));) {
    if (strncmp(e->d_name, "vd", 2) || strlen(e->d_name) + 6 > cap) continue;
    snprintf(path, sizeof path, "/sys/block/%s/serial", e->d_name);
    if (read_file(path, text, sizeof text) < 0) continue;
    text[strcspn(text, "\n")] = 0;
    memcpy(dev, "/dev/", 5);
    strcpy(dev + 5, e->d_name);
    found = !strcmp(text, serial) && access(dev, F_OK) == 0;
  }
  if (d) closedir(d);
  return found;
}

/* The /dev node of the CD drive on virtio-scsi (the first sr disk there), once a medium is in:
   opening an sr node for reading fails (ENOMEDIUM) while its tray is empty. */
static int find_cd(char *dev, size_t cap) {
  char path[300], target[300];
  int found = 0;
  DIR *d = opendir("/sys/block");
  for (struct dirent *e; d && !found && (e = readdir(d));) {
    if (strncmp(e->d_name, "sr", 2) || strlen(e->d_name) + 6 > cap) continue;
    snprintf(path, sizeof path, "/sys/block/%s", e->d_name);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0) continue;
    target[n] = 0;
    if (!strstr(target, "/virtio")) continue;
    memcpy(dev, "/dev/", 5);
    strcpy(dev + 5, e->d_name);
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if ((found = fd >= 0)) close(fd);
  }
  if (d) closedir(d);
  return found;
}

/* The /dev node mountImage's `key` names: the CD drive's for CD_SERIAL, else the virtio disk's. */
static int find_image(const char *key, char *dev, size_t cap) {
  return strcmp(key, CD_SERIAL) ? find_disk(key, dev, cap) : find_cd(dev, cap);
}

/* The name of the network interface whose MAC is `mac` (lowercase). */
static int find_nic(const char *mac, char *ifname, size_t cap) {
  char path[300], text[64];
  int found = 0;
  DIR *d = opendir("/sys/class/net");
  for (struct dirent *e; d && !found && (e = readdir(d));) {
    if (e->d_name[0] == '.' || strlen(e->d_name) >= IFNAMSIZ || strlen(e->d_name) >= cap) continue;
    snprintf(path, sizeof path, "/sys/class/net/%s/address", e->d_name);
    if (read_file(path, text, sizeof text) < 0) continue;
    text[strcspn(text, "\n")] = 0;
    if ((found = !strcmp(text, mac))) strcpy(ifname, e->d_name);
  }
  if (d) closedir(d);
  return found;
}

/* Gives the interface `ifname` the MAC `mac` ("aa:bb:cc:dd:ee:ff"); -1 with errno on failure. */
static int set_mac(const char *ifname, const char *mac) {
  struct ifreq ifr = {0};
  unsigned b[6];
  if (sscanf(mac, "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6) {
    errno = EINVAL;
    return -1;
  }
  strcpy(ifr.ifr_name, ifname);
  ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
  for (int i = 0; i < 6; i++) ifr.ifr_hwaddr.sa_data[i] = (char)b[i];
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  int r = ioctl(s, SIOCSIFHWADDR, &ifr);
  int saved = errno;
  close(s);
  errno = saved;
  return r;
}

/* The interface configureNet means by `mac`: the one with that MAC, else the VM's built-in NIC
   (still BUILTIN_NIC_MAC), which then gets `mac`. */
static int find_nic_for(const char *mac, char *ifname, size_t cap) {
  if (find_nic(mac, ifname, cap)) return 1;
  return find_nic(BUILTIN_NIC_MAC, ifname, cap) && set_mac(ifname, mac) == 0;
}

/* Runs `w` when its device is there, or fails it once its deadline passed: returns 1 when it
   answered. */
static int try_waiter(const struct waiter *w, uint64_t now) {
  char dev[64], msg[160];
  if (w->op == OP_MOUNT_IMAGE ? find_image(w->key, dev, sizeof dev)
                             : find_nic_for(w->key, dev, sizeof dev)) {
    if (w->op == OP_MOUNT_IMAGE) mount_image(w, dev);
    else configure_net(w, dev);
    return 1;
  }
  if (now < w->deadline) return 0;
  if (w->op == OP_MOUNT_IMAGE && !strcmp(w->key, CD_SERIAL))
    snprintf(msg, sizeof msg, "mountImage: no medium in the CD drive within %u ms", w->wait_ms);
  else if (w->op == OP_MOUNT_IMAGE)
    snprintf(msg, sizeof msg, "mountImage: no disk with serial %s appeared within %u ms", w->key, w->wait_ms);
  else
    snprintf(msg, sizeof msg, "configureNet: no interface with MAC %s appeared within %u ms", w->key, w->wait_ms);
  send_text_error(w->id, msg);
  return 1;
}

/* Retries every waiting operation; the uevent socket is closed once none waits. */
static void serve_waiters(void) {
  int left = 0;
  last_scan = now_ms();
  for (int i = 0; i < MAX_WAITERS; i++)
    if (waiters[i].op && try_waiter(&waiters[i], last_scan)) waiters[i].op = 0;
    else left += waiters[i].op != 0;
  if (!left) close_fd(&uevent_fd);
}

/* Runs `w` at once when its device is there, else keeps it for serve_waiters(). The uevent
   socket is opened first, so that no device appears unseen between the two. */
static void start_waiter(const struct waiter *w) {
  if (uevent_fd < 0) {
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = 1};
    uevent_fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
    if (uevent_fd >= 0 && bind(uevent_fd, (struct sockaddr *)&sa, sizeof sa) < 0) close_fd(&uevent_fd);
  } /* without it, the RESCAN_MS timer alone finds the device */
  int slot = -1;
  for (int i = 0; i < MAX_WAITERS && slot < 0; i++)
    if (!waiters[i].op) slot = i;
  if (slot < 0) send_text_error(w->id, "too many operations wait for a device");
  else if (!try_waiter(w, now_ms())) return (void)(waiters[slot] = *w);
  serve_waiters(); /* closes the uevent socket when nothing waits */
}

/* payload: u32 wait ms, u64 bytes of the writable layer, (u32 len, disk serial or CD_SERIAL),
   (u32 len, image name). */
static void op_mount_image(uint32_t id, const unsigned char *p, size_t len) {
  struct reader r = {p, p + len, 0};
  struct waiter w = {.op = OP_MOUNT_IMAGE, .id = id};
  w.wait_ms = take32(&r);
  w.size = (uint64_t)take32(&r) << 32;
  w.size |= take32(&r);
  take_text(&r, w.key, MAX_SERIAL);
  take_text(&r, w.name, MAX_NAME);
  if (r.bad || r.p != r.end || w.wait_ms > MAX_WAIT_MS || w.size < 4096 || w.size > (1ull << 40) ||
      !is_name(w.key, MAX_SERIAL) || !is_name(w.name, MAX_NAME))
    return send_text_error(id, "mountImage: malformed request");
  w.deadline = now_ms() + w.wait_ms;
  start_waiter(&w);
}

/* payload: the image name. */
static void op_unmount_image(uint32_t id, const unsigned char *p, size_t len) {
  char name[MAX_NAME + 1], path[96];
  struct stat st;
  if (len > MAX_NAME || memchr(p, 0, len)) return send_text_error(id, "unmountImage: malformed request");
  memcpy(name, p, len);
  name[len] = 0;
  if (!is_name(name, MAX_NAME)) return send_text_error(id, "unmountImage: malformed request");
  snprintf(path, sizeof path, "/run/vmf/%s", name);
  if (lstat(path, &st) < 0) return send_error(id, "unmountImage: find the image");
  unmount_image(name);
  send_frame(R_RESULT, id, NULL, 0);
}

/* payload: u32 wait ms, 6 bytes MAC, 2 bytes 0, u32 IPv4 address, u32 prefix length (1 to 32),
   u32 gateway (0: none), u32 count (0 to 3), count x u32 DNS server, (u32 len, image name: also
   write its resolv.conf; empty: none). */
static void op_configure_net(uint32_t id, const unsigned char *p, size_t len) {
  struct reader r = {p, p + len, 0};
  struct waiter w = {.op = OP_CONFIGURE_NET, .id = id};
  w.wait_ms = take32(&r);
  uint32_t mac_hi = take32(&r), mac_lo = take32(&r);
  w.addr = take32(&r);
  w.prefix = take32(&r);
  w.gateway = take32(&r);
  w.ndns = take32(&r);
  for (uint32_t i = 0; i < w.ndns && i < 3; i++) w.dns[i] = take32(&r);
  take_text(&r, w.name, MAX_NAME);
  if (r.bad || r.p != r.end || w.wait_ms > MAX_WAIT_MS || (mac_lo & 0xffff) || !w.addr ||
      w.prefix < 1 || w.prefix > 32 || w.ndns > 3 || (w.name[0] && !is_name(w.name, MAX_NAME)))
    return send_text_error(id, "configureNet: malformed request");
  snprintf(w.key, sizeof w.key, "%02x:%02x:%02x:%02x:%02x:%02x", mac_hi >> 24, mac_hi >> 16 & 255,
           mac_hi >> 8 & 255, mac_hi & 255, mac_lo >> 24, mac_lo >> 16 & 255);
  w.deadline = now_ms() + w.wait_ms;
  start_waiter(&w);
}

static void handle(int type, uint32_t id, const unsigned char *p, size_t len) {
  switch (type) {
  case OP_PING: return send_frame(R_RESULT, id, p, len);
  case OP_INFO: return op_info(id);
  case OP_EXEC: return op_exec(id, p, len);
  case OP_PERSONALIZE: return op_personalize(id, p, len);
  case OP_ONLINE_HOTPLUGGED: return op_online_hotplugged(id);
  case OP_STDIN: return op_stdin(id, p, len);
  case OP_CREDIT: return op_credit(id, p, len);
  case OP_CANCEL: return op_cancel(id);
  case OP_MOUNT_IMAGE: return op_mount_image(id, p, len);
  case OP_UNMOUNT_IMAGE: return op_unmount_image(id, p, len);
  case OP_CONFIGURE_NET: return op_configure_net(id, p, len);
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
  if (p[4] != VERSION || p[6] || (p[7] & ~FLAG_NEW_SESSION) || get32(p + 12) != (uint32_t)(n - HDR))
    return send_text_error(id, "malformed frame");
  if (p[7] & FLAG_NEW_SESSION) new_session();
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

  boot_id_mounted = mount_boot_id() == 0; /* else at the first personalize, which reports why */
  for (unsigned delay = 5; (port = open_port()) < 0; delay = delay < 500 ? delay * 2 : 1000)
    usleep(delay * 1000); /* the port appears shortly after virtio_console loads */
  fcntl(port, F_SETOWN, getpid());
  fcntl(port, F_SETFL, fcntl(port, F_GETFL) | O_ASYNC | O_NONBLOCK);
  read_port();

  for (;;) {
    struct pollfd fds[2 + 4 * MAX_JOBS];
    struct job *owner[2 + 4 * MAX_JOBS];
    nfds_t nfds = 0;
    int port_at = -1, uevent_at = -1, waiting = 0;
    uint64_t now = now_ms(), next = 0;
    if (host) {
      port_at = nfds;
      owner[nfds] = NULL;
      fds[nfds++] = (struct pollfd){port, POLLIN | (out_len ? POLLOUT : 0), 0};
    }
    for (int i = 0; i < MAX_WAITERS; i++) {
      if (!waiters[i].op) continue;
      waiting = 1;
      if (!next || waiters[i].deadline < next) next = waiters[i].deadline;
    }
    if (waiting) {
      if (!next || last_scan + RESCAN_MS < next) next = last_scan + RESCAN_MS;
      if (uevent_fd >= 0) {
        uevent_at = nfds;
        owner[nfds] = NULL;
        fds[nfds++] = (struct pollfd){uevent_fd, POLLIN, 0};
      }
    }
    for (int i = 0; i < MAX_JOBS; i++) {
      struct job *j = &jobs[i];
      if (!j->used || j->exited) continue;
      if (j->deadline && j->deadline <= now && !j->timed_out) {
        j->timed_out = 1;
        kill(-j->pid, SIGKILL);
      }
      if (j->deadline && !j->timed_out && (!next || j->deadline < next)) next = j->deadline;
      int room = out_len < BACKPRESSURE &&
                 !(j->window && !j->orphan && j->sent < j->limit && j->credit <= FRAME_COST);
      if (j->out_fd >= 0 && room) owner[nfds] = j, fds[nfds++] = (struct pollfd){j->out_fd, POLLIN, 0};
      if (j->err_fd >= 0 && room) owner[nfds] = j, fds[nfds++] = (struct pollfd){j->err_fd, POLLIN, 0};
      if (j->in_fd >= 0 && j->in_off < j->in_len)
        owner[nfds] = j, fds[nfds++] = (struct pollfd){j->in_fd, POLLOUT, 0};
      if (j->status_fd >= 0) owner[nfds] = j, fds[nfds++] = (struct pollfd){j->status_fd, POLLIN, 0};
    }
    uint64_t wait = next > now ? next - now : 0;
    struct timespec ts = {wait / 1000, wait % 1000 * 1000000};
    int r = ppoll(fds, nfds, next ? &ts : NULL, &none), rescan = 0;
    if (got_chld) {
      got_chld = 0;
      reap();
    }
    if (got_io) {
      got_io = 0;
      read_port();
    }
    for (nfds_t i = 0; r > 0 && i < nfds; i++) {
      if (!fds[i].revents) continue;
      struct job *j = owner[i];
      if ((int)i == port_at) {
        if (fds[i].revents & POLLOUT) flush_out();
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) read_port();
      } else if ((int)i == uevent_at) {
        static char event[8192];
        while (uevent_fd >= 0 && recv(uevent_fd, event, sizeof event, 0) > 0) {}
        rescan = 1;
      } else if (j->used && fds[i].fd == j->out_fd) {
        pipe_output(j, &j->out_fd, R_STDOUT);
      } else if (j->used && fds[i].fd == j->err_fd) {
        pipe_output(j, &j->err_fd, R_STDERR);
      } else if (j->used && fds[i].fd == j->in_fd) {
        feed_stdin(j);
      } else if (j->used && fds[i].fd == j->status_fd) {
        read_status(j);
      }
    }
    if (waiting && (rescan || now_ms() >= last_scan + RESCAN_MS)) serve_waiters();
  }
}
