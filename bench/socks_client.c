/*
 * Load generator and fixture server for the edgesocks benchmarks (bench/run.mjs compiles it).
 * Written in C so that neither side of a measurement is the bottleneck.
 *
 *   socks_client server [--ports K]
 *       Listens on K ports of 127.0.0.1 (default 4) and prints "ports P1 P2 ...". Every connection
 *       starts with a 9-byte header, a mode byte and a 64-bit big-endian N:
 *         'U'  sink: read N bytes (or until EOF), answer the count (8 bytes, big endian), read
 *              until EOF, close
 *         'D'  source: send N bytes, send a FIN, read until EOF, close
 *         'E'  echo until EOF, then close (also what idle tunnels are held open against)
 *       'U' and 'D' get a thread with blocking I/O each; 'E' connections share one epoll loop.
 *
 *   socks_client tput --connect H:P [--socks5 H:P] (--up|--down) --bytes N [--timeout S]
 *       One connection (through a SOCKS5 no-auth CONNECT when --socks5 names the target, else a
 *       plain connection to a server or a forwarder), then N bytes up or down as fast as possible.
 *       Prints one JSON line.
 *
 *   socks_client tunnels --connect H:P [--socks5 H:P[,P...]] --concurrency C --count N --seconds S
 *       C tunnels in flight at once, each: connect, SOCKS5 greeting and CONNECT (two round trips,
 *       as curl does), a 1-byte echo, close. Stops starting tunnels after N or S seconds.
 *       Prints one JSON line.
 *
 *   socks_client tunnels --connect H:P --http H:P[,P...] --concurrency C --count N --seconds S
 *       The same over HTTP CONNECT: "CONNECT H:P HTTP/1.1" (one round trip), a 200, the echo, close.
 *
 *   socks_client hold --connect H:P [--socks5 H:P[,P...]] --count N --concurrency C --seconds S
 *       Opens N tunnels (1-byte echo each) and keeps them open; prints "ready {json}", then waits
 *       for EOF (or a line) on stdin, closes them all and prints a final JSON line.
 *
 * Every mode raises its open-files limit to the hard limit, and every loop is bounded in time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BULK (1 << 20)
#define MAX_PORTS 16
#define HANDSHAKE_TIMEOUT 10.0

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
  fprintf(stderr, "socks_client: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static void put_be64(unsigned char *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}

static uint64_t get_be64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

/* "H:P" → sockaddr; "H:P1,P2" → several (same host). Returns how many. */
static int parse_addrs(const char *text, struct sockaddr_in *out, int max) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", text);
  char *colon = strrchr(buf, ':');
  if (!colon) return 0;
  *colon = 0;
  struct in_addr ip;
  if (inet_pton(AF_INET, buf, &ip) != 1) return 0;
  int n = 0;
  for (char *tok = strtok(colon + 1, ","); tok && n < max; tok = strtok(NULL, ",")) {
    memset(&out[n], 0, sizeof out[n]);
    out[n].sin_family = AF_INET;
    out[n].sin_addr = ip;
    out[n].sin_port = htons((uint16_t)atoi(tok));
    n++;
  }
  return n;
}

static int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int read_exact(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Length of a SOCKS5 reply given its first 5 bytes (0 if not known yet, -1 if malformed). */
static int socks5_reply_len(const unsigned char *r, int have) {
  if (have < 4) return 0;
  switch (r[3]) {
  case 1: return 10;
  case 4: return 22;
  case 3: return have < 5 ? 0 : 4 + 1 + r[4] + 2;
  default: return -1;
  }
}

static void socks5_request(unsigned char req[10], const struct sockaddr_in *target) {
  req[0] = 5, req[1] = 1, req[2] = 0, req[3] = 1;
  memcpy(req + 4, &target->sin_addr, 4);
  memcpy(req + 8, &target->sin_port, 2);
}

/* ---------------------------------------------------------------- server */

static unsigned char *bulk_buffer(void) {
  unsigned char *b = malloc(BULK);
  if (!b) die("malloc");
  for (int i = 0; i < BULK; i++) b[i] = (unsigned char)(i * 131 + 7);
  return b;
}

struct bulk_job {
  int fd;
  char mode;
  uint64_t n;
};

static void *bulk_thread(void *arg) {
  struct bulk_job job = *(struct bulk_job *)arg;
  free(arg);
  unsigned char *buf = bulk_buffer();
  struct timeval tv = {120, 0};
  setsockopt(job.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(job.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (job.mode == 'U') {
    /* The count goes back as soon as N bytes are in, so the client needs no half-close
       (microsocks, for one, closes both sides at the first FIN). */
    uint64_t total = 0;
    while (total < job.n) {
      ssize_t n = read(job.fd, buf, BULK);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      total += (uint64_t)n;
    }
    unsigned char answer[8];
    put_be64(answer, total);
    write_all(job.fd, answer, 8);
    while (read(job.fd, buf, BULK) > 0) {
    }
  } else {
    uint64_t left = job.n;
    while (left > 0) {
      size_t chunk = left < BULK ? (size_t)left : BULK;
      if (write_all(job.fd, buf, chunk) < 0) break;
      left -= chunk;
    }
    shutdown(job.fd, SHUT_WR);
    while (read(job.fd, buf, BULK) > 0) {
    }
  }
  close(job.fd);
  free(buf);
  return NULL;
}

struct sconn {
  int fd;
  int hlen;
  unsigned char hdr[9];
  int pend_off, pend_len;
  unsigned char *buf;
};

#define ECHO_BUF 16384

static _Noreturn void run_server(int nports) {
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  if (nports < 1 || nports > MAX_PORTS) nports = 4;
  int lfds[MAX_PORTS];
  printf("ports");
  for (int i = 0; i < nports; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(fd, 4096) < 0) die("listen");
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    printf(" %d", ntohs(a.sin_port));
    lfds[i] = fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    ev.data.u64 = (uint64_t)i; /* listeners: small integers; connections: pointers */
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  }
  printf("\n");
  fflush(stdout);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  struct epoll_event evs[512];
  for (;;) {
    int n = epoll_wait(ep, evs, 512, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      if (evs[i].data.u64 < MAX_PORTS) {
        int lfd = lfds[evs[i].data.u64];
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0) break;
          int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct sconn *c = calloc(1, sizeof *c);
          c->fd = fd;
          struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
        continue;
      }
      struct sconn *c = evs[i].data.ptr;
      int dead = 0;
      if (c->hlen < 9) {
        ssize_t r = read(c->fd, c->hdr + c->hlen, (size_t)(9 - c->hlen));
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) dead = 1;
        else if (r > 0) c->hlen += (int)r;
        if (!dead && c->hlen == 9) {
          char mode = (char)c->hdr[0];
          if (mode == 'U' || mode == 'D') {
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
            struct bulk_job *job = malloc(sizeof *job);
            job->fd = c->fd, job->mode = mode, job->n = get_be64(c->hdr + 1);
            pthread_t t;
            if (pthread_create(&t, &attr, bulk_thread, job) != 0) {
              close(c->fd);
              free(job);
            }
            free(c);
            continue;
          } else if (mode != 'E') {
            dead = 1;
          }
        }
      } else if (c->pend_len > 0) {
        ssize_t w = write(c->fd, c->buf + c->pend_off, (size_t)c->pend_len);
        if (w < 0 && errno != EAGAIN && errno != EINTR) dead = 1;
        else if (w > 0) {
          c->pend_off += (int)w, c->pend_len -= (int)w;
          if (c->pend_len == 0) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
          }
        }
      } else {
        if (!c->buf) c->buf = malloc(ECHO_BUF);
        ssize_t r = read(c->fd, c->buf, ECHO_BUF);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) dead = 1;
        else if (r > 0) {
          ssize_t w = write(c->fd, c->buf, (size_t)r);
          if (w < 0 && errno != EAGAIN) dead = 1;
          else {
            if (w < 0) w = 0;
            if (w < r) {
              c->pend_off = (int)w, c->pend_len = (int)(r - w);
              struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
              epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
          }
        }
      }
      if (dead) {
        close(c->fd); /* also removes it from the epoll set */
        free(c->buf);
        free(c);
      }
    }
  }
}

/* ---------------------------------------------------------------- tput */

static int connect_blocking(const struct sockaddr_in *a) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  if (connect(fd, (const struct sockaddr *)a, sizeof *a) < 0) die("connect");
  return fd;
}

static int socks5_blocking(int fd, const struct sockaddr_in *target) {
  unsigned char greet[3] = {5, 1, 0}, choice[2], req[10], rep[262];
  if (write_all(fd, greet, 3) < 0 || read_exact(fd, choice, 2) < 0) return -1;
  if (choice[0] != 5 || choice[1] != 0) return -1;
  socks5_request(req, target);
  if (write_all(fd, req, 10) < 0 || read_exact(fd, rep, 5) < 0) return -1;
  int len = socks5_reply_len(rep, 5);
  if (len < 0 || rep[1] != 0) return -1;
  return read_exact(fd, rep + 5, (size_t)len - 5);
}

static int run_tput(struct sockaddr_in *conn, struct sockaddr_in *target, int up, uint64_t bytes,
                    int timeout) {
  alarm((unsigned)timeout); /* the default action ends the process: bounded no matter what */
  int fd = connect_blocking(conn);
  if (target && socks5_blocking(fd, target) < 0) {
    fprintf(stderr, "socks_client: SOCKS5 handshake failed\n");
    return 1;
  }
  unsigned char *buf = bulk_buffer();
  unsigned char hdr[9];
  hdr[0] = up ? 'U' : 'D';
  put_be64(hdr + 1, bytes);
  double cpu0 = cpu_seconds(), t0 = now();
  uint64_t moved = 0;
  if (write_all(fd, hdr, 9) < 0) die("write header");
  if (up) {
    while (moved < bytes) {
      size_t chunk = bytes - moved < BULK ? (size_t)(bytes - moved) : BULK;
      ssize_t n = write(fd, buf, chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) die("write");
      moved += (uint64_t)n;
    }
    unsigned char answer[8];
    if (read_exact(fd, answer, 8) < 0) die("read byte count");
    moved = get_be64(answer);
  } else {
    for (;;) {
      ssize_t n = read(fd, buf, BULK);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) die("read");
      if (n == 0) break;
      moved += (uint64_t)n;
    }
  }
  double secs = now() - t0, cpu = cpu_seconds() - cpu0;
  close(fd);
  printf("{\"ok\":%s,\"bytes\":%llu,\"seconds\":%.6f,\"mibps\":%.1f,\"client_cpu\":%.4f}\n",
         moved == bytes ? "true" : "false", (unsigned long long)moved, secs,
         (double)moved / (1 << 20) / secs, cpu);
  return moved == bytes ? 0 : 1;
}

/* ---------------------------------------------------------------- tunnels, hold */

enum { S_CONNECT, S_GREET, S_REPLY, S_ECHO, S_HELD, S_HTTP };

struct tconn {
  int fd, state, got;
  double t0;
  unsigned char buf[262];
};

struct tunnels {
  int ep;
  struct sockaddr_in conn;
  struct sockaddr_in targets[MAX_PORTS];
  int ntargets, socks, http, hold;
  long started, done, errors, dropped, next_target;
  long err_connect, err_handshake, err_echo, err_timeout;
  struct tconn **slots; /* conns in flight (or held) */
  int nslots;
  double *lat;
  long nlat, maxlat;
};

static void t_fail(struct tunnels *T, struct tconn *c, long *kind) {
  (*kind)++;
  T->errors++;
  close(c->fd);
  c->fd = -1;
}

static int t_start(struct tunnels *T, struct tconn *c) {
  T->started++;
  c->got = 0;
  c->t0 = now();
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) {
    T->errors++, T->err_connect++;
    return -1;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->state = S_CONNECT;
  if (connect(c->fd, (struct sockaddr *)&T->conn, sizeof T->conn) < 0 && errno != EINPROGRESS) {
    t_fail(T, c, &T->err_connect);
    return -1;
  }
  struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
  epoll_ctl(T->ep, EPOLL_CTL_ADD, c->fd, &ev);
  return 0;
}

static void t_send_echo(struct tunnels *T, struct tconn *c) {
  unsigned char msg[10] = {'E', 0, 0, 0, 0, 0, 0, 0, 0, 'x'};
  if (write(c->fd, msg, 10) != 10) return t_fail(T, c, &T->err_echo);
  c->state = S_ECHO;
  c->got = 0;
}

/* Advances one tunnel on an event. */
static void t_event(struct tunnels *T, struct tconn *c, uint32_t events) {
  if (c->state == S_CONNECT) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err || (events & (EPOLLERR | EPOLLHUP))) return t_fail(T, c, &T->err_connect);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(T->ep, EPOLL_CTL_MOD, c->fd, &ev);
    if (T->http) {
      /* One round trip: the request head, then the 200 (nothing else comes before the echo). */
      struct sockaddr_in *t = &T->targets[T->next_target++ % T->ntargets];
      char ip[INET_ADDRSTRLEN], req[160];
      inet_ntop(AF_INET, &t->sin_addr, ip, sizeof ip);
      int port = ntohs(t->sin_port);
      int len = snprintf(req, sizeof req, "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", ip, port, ip, port);
      if (write(c->fd, req, (size_t)len) != len) return t_fail(T, c, &T->err_handshake);
      c->state = S_HTTP;
      c->got = 0;
    } else if (T->socks) {
      unsigned char greet[3] = {5, 1, 0};
      if (write(c->fd, greet, 3) != 3) return t_fail(T, c, &T->err_handshake);
      c->state = S_GREET;
      c->got = 0;
    } else {
      t_send_echo(T, c);
    }
    return;
  }
  if (c->state == S_HELD) {
    /* A held tunnel should stay silent; anything here means it was closed under us. */
    char b[64];
    ssize_t n = read(c->fd, b, sizeof b);
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
      T->dropped++;
      close(c->fd);
      c->fd = -1;
    }
    return;
  }
  if (c->state == S_HTTP) {
    ssize_t n = read(c->fd, c->buf + c->got, sizeof c->buf - 1 - (size_t)c->got);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) return t_fail(T, c, &T->err_handshake);
    c->got += (int)n;
    c->buf[c->got] = 0;
    if (!strstr((char *)c->buf, "\r\n\r\n")) {
      if (c->got >= (int)sizeof c->buf - 1) return t_fail(T, c, &T->err_handshake);
      return;
    }
    if (strncmp((char *)c->buf, "HTTP/1.1 200 ", 13) != 0) return t_fail(T, c, &T->err_handshake);
    return t_send_echo(T, c);
  }
  int want = c->state == S_GREET ? 2 : c->state == S_ECHO ? 1 : 0;
  if (c->state == S_REPLY) {
    want = socks5_reply_len(c->buf, c->got);
    if (want < 0) return t_fail(T, c, &T->err_handshake);
    if (want == 0) want = c->got < 4 ? 4 : 5;
  }
  ssize_t n = read(c->fd, c->buf + c->got, (size_t)(want - c->got));
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) return t_fail(T, c, c->state == S_ECHO ? &T->err_echo : &T->err_handshake);
  c->got += (int)n;
  if (c->got < want) return;
  if (c->state == S_GREET) {
    if (c->buf[0] != 5 || c->buf[1] != 0) return t_fail(T, c, &T->err_handshake);
    unsigned char req[10];
    socks5_request(req, &T->targets[T->next_target++ % T->ntargets]);
    if (write(c->fd, req, 10) != 10) return t_fail(T, c, &T->err_handshake);
    c->state = S_REPLY;
    c->got = 0;
  } else if (c->state == S_REPLY) {
    int full = socks5_reply_len(c->buf, c->got);
    if (full > c->got) return; /* read the rest on the next event */
    if (c->buf[1] != 0) return t_fail(T, c, &T->err_handshake);
    t_send_echo(T, c);
  } else if (c->state == S_ECHO) {
    if (c->buf[0] != 'x') return t_fail(T, c, &T->err_echo);
    T->done++;
    if (T->nlat < T->maxlat) T->lat[T->nlat++] = now() - c->t0;
    if (T->hold) {
      c->state = S_HELD;
    } else {
      close(c->fd);
      c->fd = -1;
    }
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(struct tunnels *T, double p) {
  if (T->nlat == 0) return 0;
  long i = (long)(p * (double)(T->nlat - 1));
  return T->lat[i] * 1000;
}

static void t_report(struct tunnels *T, const char *prefix, double secs, double cpu) {
  qsort(T->lat, (size_t)T->nlat, sizeof(double), cmp_double);
  printf("%s{\"completed\":%ld,\"errors\":%ld,\"seconds\":%.4f,\"per_second\":%.1f,\"p50_ms\":%.3f,"
         "\"p99_ms\":%.3f,\"err_connect\":%ld,\"err_handshake\":%ld,\"err_echo\":%ld,"
         "\"err_timeout\":%ld,\"client_cpu\":%.4f}\n",
         prefix, T->done, T->errors, secs, (double)T->done / secs, pct(T, 0.5), pct(T, 0.99),
         T->err_connect, T->err_handshake, T->err_echo, T->err_timeout, cpu);
  fflush(stdout);
}

static int run_tunnels(struct tunnels *T, int concurrency, long count, double seconds) {
  signal(SIGPIPE, SIG_IGN);
  T->ep = epoll_create1(0);
  T->nslots = T->hold ? (int)count : concurrency;
  T->slots = calloc((size_t)T->nslots, sizeof *T->slots);
  T->maxlat = count;
  T->lat = malloc(sizeof(double) * (size_t)count);
  double cpu0 = cpu_seconds(), t0 = now(), stop_at = t0 + seconds;
  /* Hard bound: after the time budget, in-flight tunnels get HANDSHAKE_TIMEOUT more at most. */
  alarm((unsigned)(seconds + HANDSHAKE_TIMEOUT + 30));
  int inflight = 0; /* tunnels opening (not held) */
  long next_slot = 0;
  struct epoll_event evs[512];
  for (;;) {
    double t = now();
    int may_start = T->started < count && t < stop_at;
    /* Refill: up to `concurrency` tunnels opening at once. */
    if (T->hold) {
      while (may_start && inflight < concurrency && next_slot < T->nslots) {
        struct tconn *c = calloc(1, sizeof *c);
        T->slots[next_slot++] = c;
        if (t_start(T, c) == 0) inflight++;
        may_start = T->started < count;
      }
    } else {
      for (int i = 0; i < T->nslots && may_start; i++) {
        if (!T->slots[i]) T->slots[i] = calloc(1, sizeof(struct tconn)), T->slots[i]->fd = -1;
        if (T->slots[i]->fd < 0) {
          if (t_start(T, T->slots[i]) == 0) inflight++;
          may_start = T->started < count;
        }
      }
    }
    if (inflight == 0 && !(may_start && (T->hold ? next_slot < T->nslots : 1))) break;
    int n = epoll_wait(T->ep, evs, 512, 50);
    for (int i = 0; i < n; i++) {
      struct tconn *c = evs[i].data.ptr;
      if (c->fd < 0) continue;
      int before = c->state;
      t_event(T, c, evs[i].events);
      if (before != S_HELD && (c->fd < 0 || c->state == S_HELD)) inflight--;
    }
    /* Per-tunnel timeout, so that a stuck proxy cannot hang the run. */
    t = now();
    for (long i = 0; i < (T->hold ? next_slot : T->nslots); i++) {
      struct tconn *c = T->slots[i];
      if (c && c->fd >= 0 && c->state != S_HELD && t - c->t0 > HANDSHAKE_TIMEOUT) {
        t_fail(T, c, &T->err_timeout);
        inflight--;
      }
    }
  }
  double secs = now() - t0;
  if (!T->hold) {
    t_report(T, "", secs, cpu_seconds() - cpu0);
    return T->done > 0 ? 0 : 1;
  }
  t_report(T, "ready ", secs, cpu_seconds() - cpu0);
  /* Hold until stdin says so (a line or EOF); bounded by the alarm below. */
  alarm(600);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(T->ep, EPOLL_CTL_ADD, 0, &ev);
  for (int released = 0; !released;) {
    int n = epoll_wait(T->ep, evs, 512, 1000);
    for (int i = 0; i < n; i++) {
      struct tconn *c = evs[i].data.ptr;
      if (!c) {
        released = 1;
        continue;
      }
      if (c->fd >= 0) t_event(T, c, evs[i].events);
    }
  }
  long held = 0;
  for (long i = 0; i < next_slot; i++) {
    if (T->slots[i] && T->slots[i]->fd >= 0) held++, close(T->slots[i]->fd);
  }
  printf("{\"released\":%ld,\"dropped\":%ld}\n", held, T->dropped);
  return 0;
}

/* ---------------------------------------------------------------- main */

static const char *arg(int argc, char **argv, const char *name, const char *dflt) {
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], name) == 0) return i + 1 < argc && argv[i + 1][0] != '-' ? argv[i + 1] : "";
  }
  return dflt;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: socks_client server|tput|tunnels|hold [options] (see the source)\n");
    return 2;
  }
  raise_nofile();
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *mode = argv[1];
  if (strcmp(mode, "server") == 0) run_server(atoi(arg(argc, argv, "--ports", "4")));

  struct sockaddr_in conn, targets[MAX_PORTS];
  if (parse_addrs(arg(argc, argv, "--connect", ""), &conn, 1) != 1) {
    fprintf(stderr, "socks_client: --connect HOST:PORT needed\n");
    return 2;
  }
  const char *socks = arg(argc, argv, "--socks5", NULL);
  const char *http = arg(argc, argv, "--http", NULL);
  if (socks && http) {
    fprintf(stderr, "socks_client: --socks5 or --http, not both\n");
    return 2;
  }
  int ntargets = socks ? parse_addrs(socks, targets, MAX_PORTS) : http ? parse_addrs(http, targets, MAX_PORTS) : 0;
  if ((socks || http) && ntargets == 0) {
    fprintf(stderr, "socks_client: bad %s\n", socks ? "--socks5" : "--http");
    return 2;
  }
  if (strcmp(mode, "tput") == 0 && http) {
    fprintf(stderr, "socks_client: tput has no --http mode\n");
    return 2;
  }
  if (strcmp(mode, "tput") == 0) {
    int up = arg(argc, argv, "--up", NULL) != NULL;
    uint64_t bytes = strtoull(arg(argc, argv, "--bytes", "1073741824"), NULL, 10);
    return run_tput(&conn, socks ? &targets[0] : NULL, up, bytes, atoi(arg(argc, argv, "--timeout", "120")));
  }
  if (strcmp(mode, "tunnels") == 0 || strcmp(mode, "hold") == 0) {
    struct tunnels T = {0};
    T.conn = conn;
    memcpy(T.targets, targets, sizeof targets);
    T.ntargets = ntargets;
    T.socks = socks != NULL;
    T.http = http != NULL;
    T.hold = strcmp(mode, "hold") == 0;
    int concurrency = atoi(arg(argc, argv, "--concurrency", "50"));
    long count = atol(arg(argc, argv, "--count", "10000"));
    double seconds = atof(arg(argc, argv, "--seconds", "3"));
    if (concurrency < 1 || count < 1 || seconds <= 0) return 2;
    return run_tunnels(&T, concurrency, count, seconds);
  }
  fprintf(stderr, "socks_client: unknown mode %s\n", mode);
  return 2;
}
