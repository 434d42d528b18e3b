// SPDX-License-Identifier: MIT
/*
 * sockprobe: moves a verifiable byte stream over TCP with a chosen kind of
 * reader, to prove a data path byte-exact and prompt. Used by accel's
 * self-test, its tests and its demo. Prints one JSON line per side.
 *
 *   sockprobe pair   [opts]            both ends in this process tree (loopback)
 *   sockprobe server --port P [opts]   accept one connection: read, then reply
 *   sockprobe client --host H --port P [opts]
 *   sockprobe many   --concurrent N | --sequential N [--early]
 *   sockprobe slowreader [--conns N] [--duplex] --pause-ms P   backpressure
 *
 * The stream is a deterministic pseudo-random sequence (xorshift64*) seeded
 * by --seed: the reader checks every byte as it arrives. Readers (--reader,
 * and --back-reader for the client's read of the reply): blocking recv,
 * poll, epoll level or edge triggered, FIONREAD-sized, MSG_PEEK, and
 * splice(2) into a pipe, read back from the pipe. An end of stream while
 * bytes are still queued is reported as "premature EOF".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum reader { R_BLOCKING, R_POLL, R_EPOLL, R_EPOLL_ET, R_FIONREAD, R_PEEK, R_SPLICE };
static const char *reader_names[] = { "blocking", "poll", "epoll", "epoll-et", "fionread", "peek", "splice" };

struct opts {
	const char *cmd;
	const char *host;
	int port;
	int family; /* 4, 6, or 46: AF_INET client to an AF_INET6 (dual-stack) listener */
	enum reader reader;
	enum reader back_reader; /* the client's reader of the reply */
	int hold_read;		 /* server: wait for a stdin line before reading */
	int read_at_half_close;	 /* client: read the reply while the writer half-closes */
	int reply_delay_ms;	 /* server: wait this long after the request before replying */
	int read_delay_ms;	 /* server: sleep this long before reading (its writer gets ahead) */
	uint64_t bytes;		 /* client -> server */
	uint64_t back;		 /* server -> client, after the client's half-close */
	int duplex;		 /* both directions at once */
	const char *sizes;
	int stall_ms;
	int hold;     /* wait for a stdin line once connected */
	int hold_end; /* the writer waits for a stdin line before its last write */
	int pace_us;  /* sleep between writes */
	int rst;      /* client aborts with RST after sending */
	uint64_t seed;
	int concurrent;
	int sequential;
	int early; /* many: client sends before the server's socket exists */
	int timeout_s;
};

static struct opts o = {
	.host = "127.0.0.1",
	.family = 4,
	.reader = R_BLOCKING,
	.back_reader = R_POLL,
	.bytes = 1 << 20,
	.sizes = "65536",
	.stall_ms = 5000,
	.seed = 1,
	.timeout_s = 300,
};

static char side_name[16] = "main";

static void emit(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDOUT_FILENO, line, n) < 0)
		_exit(3);
}

static __attribute__((noreturn)) void die(const char *what, int err)
{
	emit("{\"side\":\"%s\",\"ok\":false,\"error\":\"%s: %s\"}", side_name, what, strerror(err));
	_exit(1);
}

static void on_alarm(int sig)
{
	(void)sig;
	emit("{\"side\":\"%s\",\"ok\":false,\"error\":\"overall timeout\"}", side_name);
	_exit(3);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- the stream ---- */
struct gen {
	uint64_t state;
	uint8_t buf[8];
	int avail;
};

static void gen_init(struct gen *g, uint64_t seed)
{
	g->state = seed * 0x9E3779B97F4A7C15ull + 1;
	g->avail = 0;
}

static void gen_fill(struct gen *g, uint8_t *out, size_t n)
{
	while (n) {
		if (!g->avail) {
			uint64_t x = g->state;

			x ^= x >> 12;
			x ^= x << 25;
			x ^= x >> 27;
			g->state = x;
			x *= 0x2545F4914F6CDD1Dull;
			memcpy(g->buf, &x, 8);
			g->avail = 8;
		}
		*out++ = g->buf[8 - g->avail--];
		n--;
	}
}

/* Write sizes: a number, a comma list cycled through, or "mix": mostly
 * random sizes up to 1 MiB with runs of 1-byte writes in between. */
struct sizer {
	uint64_t list[32];
	int n, i;
	int mix;
	uint64_t rng;
	int tiny_run;
};

static void sizer_init(struct sizer *s, const char *spec)
{
	memset(s, 0, sizeof(*s));
	s->rng = 0x1234567;
	if (!strcmp(spec, "mix")) {
		s->mix = 1;
		return;
	}
	char *copy = strdup(spec), *tok, *save = NULL;

	for (tok = strtok_r(copy, ",", &save); tok && s->n < 32; tok = strtok_r(NULL, ",", &save))
		s->list[s->n++] = strtoull(tok, NULL, 0) ?: 1;
	free(copy);
	if (!s->n)
		s->list[s->n++] = 65536;
}

static uint64_t sizer_next(struct sizer *s)
{
	if (!s->mix)
		return s->list[s->i++ % s->n];
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	if (s->tiny_run) {
		s->tiny_run--;
		return 1;
	}
	switch (s->rng % 8) {
	case 0:
		s->tiny_run = 200 + s->rng % 2000;
		return 1;
	case 1:
		return 1 << 20;
	case 2:
		return 1 + (s->rng >> 8) % 64;
	default:
		return 1 + (s->rng >> 8) % (1 << 20);
	}
}

/* ---- sockets ---- */
static void set_timeouts(int fd)
{
	struct timeval tv = { .tv_sec = o.stall_ms / 1000, .tv_usec = (o.stall_ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static void set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);

	fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

static int local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	getsockname(fd, (struct sockaddr *)&ss, &len);
	return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					     : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

static int make_listener(int port)
{
	int one = 1, fd;

	if (o.family == 4) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

		inet_pton(AF_INET, strcmp(o.cmd, "server") ? "127.0.0.1" : "0.0.0.0", &a.sin_addr);
		fd = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)))
			die("bind", errno);
	} else {
		struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
		int zero = 0;

		a.sin6_addr = in6addr_any;
		if (o.family == 6 && strcmp(o.cmd, "server"))
			a.sin6_addr = in6addr_loopback;
		fd = socket(AF_INET6, SOCK_STREAM, 0);
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)))
			die("bind", errno);
	}
	if (listen(fd, 4096))
		die("listen", errno);
	return fd;
}

static int connect_to(const char *host, int port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	char service[16];
	int fd, rc;

	snprintf(service, sizeof(service), "%d", port);
	rc = getaddrinfo(host, service, &hints, &res);
	if (rc)
		die("getaddrinfo", EINVAL);
	fd = socket(res->ai_family, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket", errno);
	if (connect(fd, res->ai_addr, res->ai_addrlen))
		die("connect", errno);
	freeaddrinfo(res);
	return fd;
}

/* ---- writing and reading the stream ---- */
static void wait_line(void);

static const char *send_stream(int fd, uint64_t total, uint64_t seed)
{
	static __thread uint8_t *buf;
	struct gen g;
	struct sizer s;
	uint64_t sent = 0;

	if (!buf)
		buf = malloc(1 << 20);
	gen_init(&g, seed);
	sizer_init(&s, o.sizes);
	while (sent < total) {
		uint64_t want = sizer_next(&s);
		size_t n = want > total - sent ? total - sent : want, off = 0;

		if (n > (1 << 20))
			n = 1 << 20;
		gen_fill(&g, buf, n);
		/* Still running until told (--hold-end, the client's writer): a
		 * test can then act on a live connection whatever the machine's
		 * speed. */
		if (o.hold_end && sent + n == total && !strcmp(side_name, "client")) {
			emit("{\"event\":\"before-end\"}");
			wait_line();
		}
		while (off < n) {
			ssize_t w = send(fd, buf + off, n - off, MSG_NOSIGNAL);

			if (w < 0 && errno == EINTR)
				continue;
			/* A non-blocking reader shares the file (--duplex): wait for
			 * room as a blocking send would, up to the stall limit. */
			if (w < 0 && errno == EAGAIN) {
				struct pollfd p = { .fd = fd, .events = POLLOUT };

				if (poll(&p, 1, o.stall_ms) > 0)
					continue;
				return "writer stalled (peer not reading)";
			}
			if (w < 0)
				return strerror(errno);
			off += w;
		}
		sent += n;
		if (o.pace_us)
			usleep(o.pace_us);
	}
	return NULL;
}

struct rx {
	struct gen g;
	uint64_t got;
	uint64_t expect;
	const char *err;
	char *errbuf; /* per-thread storage: the text outlives recv_stream() */
};

static __thread char rx_errbuf[160];
#define ERRBUF_SIZE sizeof(rx_errbuf)

/* Check a chunk against the stream. */
static int rx_take(struct rx *r, const uint8_t *data, size_t n)
{
	uint8_t want[4096];
	size_t off = 0;

	if (r->got + n > r->expect) {
		snprintf(r->errbuf, ERRBUF_SIZE, "received more than %llu bytes", (unsigned long long)r->expect);
		r->err = r->errbuf;
		return -1;
	}
	while (off < n) {
		size_t k = n - off < sizeof(want) ? n - off : sizeof(want);

		gen_fill(&r->g, want, k);
		if (memcmp(want, data + off, k)) {
			size_t i = 0;

			while (want[i] == data[off + i])
				i++;
			snprintf(r->errbuf, ERRBUF_SIZE, "byte %llu differs from the stream",
				 (unsigned long long)(r->got + off + i));
			r->err = r->errbuf;
			return -1;
		}
		off += k;
	}
	r->got += n;
	return 0;
}

static int wait_readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int rc;

	do
		rc = poll(&p, 1, o.stall_ms);
	while (rc < 0 && errno == EINTR);
	return rc;
}

/* Read until EOF with the chosen reader; returns NULL or an error text. */
static const char *recv_stream(int fd, uint64_t expect, uint64_t seed, uint64_t *got, int *reset)
{
	static __thread uint8_t *buf;
	const size_t cap = 1 << 16;
	struct rx r = { .expect = expect, .errbuf = rx_errbuf };
	int ep = -1, pipefd[2] = { -1, -1 };
	double started = now_ms();
	ssize_t n;

	if (!buf)
		buf = malloc(cap);
	gen_init(&r.g, seed);
	*reset = 0;
	set_nonblock(fd, o.reader != R_BLOCKING);
	if (o.reader == R_EPOLL || o.reader == R_EPOLL_ET) {
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | (o.reader == R_EPOLL_ET ? EPOLLET : 0) };

		ep = epoll_create1(0);
		epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	}
	if (o.reader == R_SPLICE && pipe2(pipefd, 0))
		return strerror(errno);

	for (;;) {
		int eof = 0;

		switch (o.reader) {
		case R_BLOCKING:
			started = now_ms();
			n = recv(fd, buf, cap, 0);
			if (n < 0 && errno == EAGAIN) {
				/* A blocking recv may only fail with EAGAIN once its
				 * SO_RCVTIMEO ran out; earlier is a spurious wake-up
				 * turned into an error (a tcp_bpf defect). */
				if (now_ms() - started < o.stall_ms * 0.9)
					snprintf(
						r.errbuf, ERRBUF_SIZE,
						"spurious EAGAIN: blocking recv failed after %.0f ms, before its %d ms timeout",
						now_ms() - started, o.stall_ms);
				else
					snprintf(r.errbuf, ERRBUF_SIZE,
						 "reader stalled: no data and no EOF within %d ms", o.stall_ms);
				r.err = r.errbuf;
				goto out;
			}
			break;
		case R_EPOLL:
		case R_EPOLL_ET: {
			struct epoll_event ev;
			int rc = epoll_wait(ep, &ev, 1, o.stall_ms);

			if (rc == 0) {
				r.err = "epoll reader stalled: no wake-up within the stall limit";
				goto out;
			}
			if (rc < 0 && errno == EINTR)
				continue;
			/* Level-triggered: one read per wake-up. Edge-triggered:
			 * read until EAGAIN, or the next wake-up may never come. */
			do {
				n = recv(fd, buf, cap, 0);
				if (n > 0 && rx_take(&r, buf, n))
					goto out;
			} while (o.reader == R_EPOLL_ET && n > 0);
			if (n > 0)
				continue;
			break;
		}
		default: {
			int rc = wait_readable(fd);

			if (rc == 0) {
				r.err = "reader stalled: poll saw no data and no EOF within the stall limit";
				goto out;
			}
			if (rc < 0)
				continue;
			if (o.reader == R_POLL) {
				n = recv(fd, buf, cap, 0);
			} else if (o.reader == R_FIONREAD) {
				int avail = 0;

				ioctl(fd, FIONREAD, &avail);
				if (avail == 0) {
					/* Readable with nothing queued must mean EOF. */
					n = recv(fd, buf, 1, 0);
					if (n > 0) {
						r.err = "FIONREAD reported 0 while data was readable";
						goto out;
					}
				} else {
					n = recv(fd, buf, (size_t)avail < cap ? (size_t)avail : cap, 0);
				}
			} else if (o.reader == R_PEEK) {
				static __thread uint8_t *peek;

				if (!peek)
					peek = malloc(cap);
				n = recv(fd, peek, cap, MSG_PEEK);
				if (n > 0) {
					ssize_t m = recv(fd, buf, n, 0);

					if (m != n || memcmp(peek, buf, n)) {
						r.err = "MSG_PEEK returned other bytes than the read after it";
						goto out;
					}
				}
			} else { /* R_SPLICE */
				n = splice(fd, NULL, pipefd[1], NULL, cap, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
				if (n > 0) {
					ssize_t m = read(pipefd[0], buf, n);

					if (m != n) {
						r.err = "short read from the splice pipe";
						goto out;
					}
				}
			}
		}
		}
		if (n == 0)
			eof = 1;
		else if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		else if (n < 0) {
			if (errno == ECONNRESET)
				*reset = 1;
			else
				r.err = strerror(errno);
			goto out;
		}
		if (eof)
			break;
		if (rx_take(&r, buf, n))
			goto out;
	}
	if (r.got != expect) {
		uint8_t next;

		/* An end of stream with bytes still queued is not the peer's:
		 * the read call (splice(2) on a socket in a sockmap) ended the
		 * stream too early. Otherwise the peer sent too little. */
		if (recv(fd, &next, 1, MSG_PEEK | MSG_DONTWAIT) > 0)
			snprintf(r.errbuf, ERRBUF_SIZE,
				 "premature EOF: %s returned 0 after %llu of %llu bytes while recv() had more to read",
				 o.reader == R_SPLICE ? "splice(2)" : "recv()", (unsigned long long)r.got,
				 (unsigned long long)expect);
		else
			snprintf(r.errbuf, ERRBUF_SIZE, "EOF after %llu of %llu bytes", (unsigned long long)r.got,
				 (unsigned long long)expect);
		r.err = r.errbuf;
	}
out:
	if (ep >= 0)
		close(ep);
	if (pipefd[0] >= 0) {
		close(pipefd[0]);
		close(pipefd[1]);
	}
	set_nonblock(fd, 0);
	*got = r.got;
	return r.err;
}

static void wait_line(void)
{
	char c;

	while (read(STDIN_FILENO, &c, 1) == 1 && c != '\n')
		;
}

/* ---- one connection, both directions ---- */
struct writer_arg {
	int fd;
	uint64_t bytes;
	uint64_t seed;
	const char *err;
};

static void *writer_thread(void *p)
{
	struct writer_arg *a = p;

	a->err = send_stream(a->fd, a->bytes, a->seed);
	/* --read-at-half-close: give the reader time to block in its read. */
	if (!a->err && o.read_at_half_close)
		usleep(20 * 1000);
	if (!a->err)
		shutdown(a->fd, SHUT_WR);
	return NULL;
}

static void report(const char *side, int ok, const char *err, uint64_t rx, uint64_t tx, double ms, int reset)
{
	emit("{\"side\":\"%s\",\"ok\":%s,\"reader\":\"%s\",\"received\":%llu,\"sent\":%llu,\"ms\":%.1f,"
	     "\"reset\":%s,\"error\":%s%s%s}",
	     side, ok ? "true" : "false", reader_names[o.reader], (unsigned long long)rx, (unsigned long long)tx, ms,
	     reset ? "true" : "false", err ? "\"" : "", err ? err : "null", err ? "\"" : "");
}

/* Server side: read the client's stream to EOF, then send `back` bytes. */
static int serve_conn(int fd)
{
	double t0 = now_ms();
	uint64_t got = 0;
	int reset = 0;
	const char *err = NULL;
	struct writer_arg w = { .fd = fd, .bytes = o.back, .seed = o.seed + 1 };
	pthread_t th;

	strcpy(side_name, "server");
	set_timeouts(fd);
	if (o.duplex)
		pthread_create(&th, NULL, writer_thread, &w);
	if (o.hold_read) {
		emit("{\"event\":\"before-read\"}");
		wait_line();
	}
	/* A reader that falls behind: what its writer sends meanwhile fills
	 * the queue, and on the fast path a writer past the queue limit is
	 * held back (its bytes arrive by TCP). */
	if (o.read_delay_ms)
		usleep(o.read_delay_ms * 1000);
	err = recv_stream(fd, o.bytes, o.seed, &got, &reset);
	if (o.rst) {
		/* The client aborted: a reset is what must be seen. */
		report("server", reset && !err, reset ? err : (err ?: "no ECONNRESET after the peer's RST"), got, 0,
		       now_ms() - t0, reset);
		close(fd);
		return reset && !err ? 0 : 1;
	}
	if (o.duplex) {
		pthread_join(th, NULL);
	} else if (!err && !reset) {
		/* A service that takes a while to answer: the client waits
		 * in its read with nothing queued meanwhile. */
		if (o.reply_delay_ms)
			usleep(o.reply_delay_ms * 1000);
		w.err = send_stream(fd, o.back, o.seed + 1);
		if (!w.err)
			shutdown(fd, SHUT_WR);
	}
	if (!err && reset)
		err = "unexpected ECONNRESET";
	if (!err)
		err = w.err;
	report("server", !err, err, got, o.back, now_ms() - t0, reset);
	close(fd);
	return err ? 1 : 0;
}

/* Client side: send the stream (half-close), then read the reply to EOF. */
static int client_conn(int fd)
{
	double t0 = now_ms();
	uint64_t got = 0;
	int reset = 0;
	const char *err = NULL;
	struct writer_arg w = { .fd = fd, .bytes = o.bytes, .seed = o.seed };
	pthread_t th;

	strcpy(side_name, "client");
	set_timeouts(fd);
	if (o.rst) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		err = send_stream(fd, o.bytes, o.seed);
		usleep(100 * 1000); /* let the bytes arrive before the RST */
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
		report("client", !err, err, 0, o.bytes, now_ms() - t0, 0);
		return err ? 1 : 0;
	}
	pthread_create(&th, NULL, writer_thread, &w);
	/* The reply is read after the half-close, or (--read-at-half-close)
	 * by a reader already waiting for it when the writer half-closes, as
	 * a relay with a thread per direction does; --duplex: both at once. */
	if (!o.duplex && !o.read_at_half_close)
		pthread_join(th, NULL);
	if (!w.err) {
		enum reader saved = o.reader;

		o.reader = o.back_reader;
		err = recv_stream(fd, o.back, o.seed + 1, &got, &reset);
		o.reader = saved;
	}
	if (o.duplex || o.read_at_half_close)
		pthread_join(th, NULL);
	if (!err && reset)
		err = "unexpected ECONNRESET";
	if (!err)
		err = w.err;
	report("client", !err, err, got, o.bytes, now_ms() - t0, reset);
	close(fd);
	return err ? 1 : 0;
}

static int cmd_pair(void)
{
	int lfd = make_listener(o.port), go[2], cfd, sfd, status = 0, rc;
	pid_t pid;

	if (pipe(go))
		die("pipe", errno);
	pid = fork();
	if (pid < 0)
		die("fork", errno);
	if (pid == 0) {
		char c;

		close(go[1]);
		cfd = connect_to(o.family == 6 ? "::1" : "127.0.0.1", local_port(lfd));
		close(lfd);
		if (read(go[0], &c, 1) != 1)
			_exit(1);
		_exit(client_conn(cfd));
	}
	close(go[0]);
	sfd = accept(lfd, NULL, NULL);
	if (sfd < 0)
		die("accept", errno);
	close(lfd);
	if (o.hold) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);

		getpeername(sfd, (struct sockaddr *)&peer, &len);
		emit("{\"event\":\"connected\",\"serverPort\":%d,\"clientPort\":%d}", local_port(sfd),
		     ntohs(peer.ss_family == AF_INET ? ((struct sockaddr_in *)&peer)->sin_port
						     : ((struct sockaddr_in6 *)&peer)->sin6_port));
		wait_line();
	}
	if (write(go[1], "g", 1) != 1)
		die("pipe write", errno);
	rc = serve_conn(sfd);
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		rc = 1;
	emit("{\"event\":\"done\",\"ok\":%s}", rc ? "false" : "true");
	return rc;
}

static int cmd_server(void)
{
	int lfd = make_listener(o.port), fd;

	emit("{\"event\":\"listening\",\"port\":%d}", local_port(lfd));
	fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		die("accept", errno);
	close(lfd);
	return serve_conn(fd);
}

static int cmd_client(void)
{
	return client_conn(connect_to(o.host, o.port));
}

static int recv_full(int fd, uint8_t *buf, size_t n)
{
	size_t off = 0;

	while (off < n) {
		ssize_t r = recv(fd, buf + off, n - off, 0);

		if (r <= 0)
			return -1;
		off += r;
	}
	return 0;
}

/*
 * Many connections. --concurrent N: N connections open at the same time,
 * each carrying a small request and its echo. --sequential N: one after the
 * other. --early: the client sends its request right after connect(), in
 * two writes, and always before the server's socket exists: the listener
 * has TCP_DEFER_ACCEPT, so the server drops the handshake's last ACK and
 * completes the connection (making its socket, and running the sockops
 * callback for it) only when the client's first bytes arrive. Each
 * client's first write races its peer's entry into the map, and loses.
 */
static int exchange(int cfd, int sfd, int i)
{
	char req[256];
	uint8_t got[256];
	int len = snprintf(req, sizeof(req), "request %d %s", i, "0123456789abcdefghijklmnopqrstuvwxyz");

	if (!o.early && send(cfd, req, len, MSG_NOSIGNAL) != len)
		return -1;
	if (recv_full(sfd, got, len) || memcmp(req, got, len) || send(sfd, got, len, MSG_NOSIGNAL) != len)
		return -1;
	if (recv_full(cfd, got, len))
		return -1;
	return memcmp(req, got, len) ? -1 : 0;
}

static int open_pair(int lfd, int *cfd, int *sfd, int i)
{
	*cfd = connect_to(o.family == 6 ? "::1" : "127.0.0.1", local_port(lfd));
	set_timeouts(*cfd);
	if (o.early) {
		char req[256];
		int len = snprintf(req, sizeof(req), "request %d %s", i, "0123456789abcdefghijklmnopqrstuvwxyz");

		/* Split so that more than one message may race the peer's
		 * insertion into the map. */
		if (send(*cfd, req, 5, MSG_NOSIGNAL) != 5 || send(*cfd, req + 5, len - 5, MSG_NOSIGNAL) != len - 5)
			return -1;
	}
	*sfd = accept(lfd, NULL, NULL);
	if (*sfd < 0)
		return -1;
	set_timeouts(*sfd);
	return 0;
}

static int cmd_many(void)
{
	struct rlimit rl = { 65536, 65536 };
	int lfd = make_listener(o.port), failed = 0, i;
	double t0 = now_ms();

	strcpy(side_name, "many");
	setrlimit(RLIMIT_NOFILE, &rl);
	if (o.early) {
		/* Seconds until the server gives up waiting for data and
		 * retransmits its SYN-ACK: the data comes at once. */
		int defer_s = 5;

		if (setsockopt(lfd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_s, sizeof(defer_s)))
			die("TCP_DEFER_ACCEPT", errno);
	}
	if (o.concurrent) {
		int *fds = calloc(2 * o.concurrent, sizeof(int));

		for (i = 0; i < o.concurrent; i++)
			if (open_pair(lfd, &fds[2 * i], &fds[2 * i + 1], i))
				die("connect/accept", errno);
		if (o.hold) {
			emit("{\"event\":\"connected\",\"connections\":%d}", o.concurrent);
			wait_line();
		}
		for (i = 0; i < o.concurrent; i++)
			failed += exchange(fds[2 * i], fds[2 * i + 1], i) ? 1 : 0;
		for (i = 0; i < 2 * o.concurrent; i++)
			close(fds[i]);
		free(fds);
	}
	for (i = 0; i < o.sequential; i++) {
		int cfd, sfd;

		if (open_pair(lfd, &cfd, &sfd, i))
			die("connect/accept", errno);
		failed += exchange(cfd, sfd, i) ? 1 : 0;
		close(cfd);
		close(sfd);
	}
	emit("{\"side\":\"many\",\"ok\":%s,\"connections\":%d,\"failed\":%d,\"ms\":%.1f}", failed ? "false" : "true",
	     o.concurrent + o.sequential, failed, now_ms() - t0);
	return failed ? 1 : 0;
}

/* Round trips of --sizes bytes (first size) over one connection; the
 * client reports the latency percentiles in microseconds. */
static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int cmd_pingpong(void)
{
	int lfd = make_listener(o.port), sfd, cfd, status = 0, count = o.sequential ? o.sequential : 10000, i;
	size_t size = strtoull(o.sizes, NULL, 0) ?: 64;
	uint8_t *buf = calloc(1, size);
	pid_t pid;

	cfd = connect_to(o.family == 6 ? "::1" : "127.0.0.1", local_port(lfd));
	sfd = accept(lfd, NULL, NULL);
	close(lfd);
	pid = fork();
	if (pid == 0) { /* echo side */
		close(cfd);
		while (recv_full(sfd, buf, size) == 0)
			if (send(sfd, buf, size, MSG_NOSIGNAL) != (ssize_t)size)
				break;
		_exit(0);
	}
	close(sfd);
	strcpy(side_name, "pingpong");
	double *lat = calloc(count, sizeof(double)), t0 = now_ms();
	int one = 1;

	setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (i = 0; i < count; i++) {
		double t = now_ms();

		memset(buf, i & 0xff, size);
		if (send(cfd, buf, size, MSG_NOSIGNAL) != (ssize_t)size || recv_full(cfd, buf, size))
			die("round trip", errno);
		if (buf[0] != (i & 0xff) || buf[size - 1] != (i & 0xff))
			die("echo content", EIO);
		lat[i] = (now_ms() - t) * 1000.0;
	}
	double total = now_ms() - t0;

	shutdown(cfd, SHUT_WR);
	waitpid(pid, &status, 0);
	qsort(lat, count, sizeof(double), cmp_double);
	emit("{\"side\":\"pingpong\",\"ok\":true,\"count\":%d,\"size\":%zu,\"p50_us\":%.2f,\"p99_us\":%.2f,\"ms\":%.1f}",
	     count, size, lat[count / 2], lat[(int)(count * 0.99)], total);
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: sockprobe pair|server|client|many|pingpong [--host H] [--port P] [--family 4|6|46]\n"
		"  [--reader blocking|poll|epoll|epoll-et|fionread|peek|splice] [--back-reader R]\n"
		"  [--bytes N] [--back N] [--hold-read] [--read-at-half-close] [--reply-delay-ms N]"
		" [--read-delay-ms N]\n"
		"  [--duplex] [--sizes N,N|mix] [--stall-ms N] [--hold] [--hold-end] [--pace-us N] [--rst] [--seed N]\n"
		"  [--concurrent N] [--sequential N] [--early] [--timeout-s N]\n"
		"  slowreader [--conns N] [--duplex] [--bytes N] [--pause-ms N] [--writer blocking|poll|epoll]\n"
		"    [--host H --port P: through an echo server there, or a relay with --duplex]\n");
	exit(2);
}

/* ---- slowreader: writers against readers that pause ----
 * Each flow is one direction of a loopback connection. Its writer sends as
 * fast as the kernel accepts (blocking, or non-blocking waiting on poll or
 * epoll); its reader sleeps --pause-ms first. What the kernel accepted from
 * each writer by the end of the pause is what it holds for a reader that
 * does not read: TCP bounds it by the receive and send buffers. Then the
 * readers check every byte. */
enum writer { W_BLOCKING, W_POLL, W_EPOLL };
static const char *writer_names[] = { "blocking", "poll", "epoll" };
static enum writer o_writer = W_BLOCKING;
static int o_conns = 1, o_pause_ms = 3000;
static int o_remote; /* --port given: the flows go through a server there */

struct flow {
	int wfd, rfd;
	uint64_t seed;
	uint64_t accepted; /* atomic: read by the main thread */
	uint64_t waits;	   /* times the writer found the socket full */
	int werr;
	uint64_t got;
	int reset;
	const char *rerr;
	pthread_t wt, rt;
};

static void *slow_writer(void *p)
{
	struct flow *f = p;
	uint8_t *buf = malloc(1 << 16);
	struct gen g;
	uint64_t sent = 0;
	int ep = -1;

	gen_init(&g, f->seed);
	set_nonblock(f->wfd, o_writer != W_BLOCKING);
	if (o_writer == W_EPOLL) {
		struct epoll_event ev = { .events = EPOLLOUT };

		ep = epoll_create1(0);
		epoll_ctl(ep, EPOLL_CTL_ADD, f->wfd, &ev);
	}
	while (sent < o.bytes && !f->werr) {
		size_t n = o.bytes - sent < (1 << 16) ? o.bytes - sent : (1 << 16), off = 0;

		gen_fill(&g, buf, n);
		while (off < n) {
			ssize_t w = send(f->wfd, buf + off, n - off, MSG_NOSIGNAL);

			if (w > 0) {
				off += w;
				__atomic_add_fetch(&f->accepted, w, __ATOMIC_RELAXED);
				continue;
			}
			if (w < 0 && errno == EINTR)
				continue;
			/* A blocking writer meets EAGAIN too when a non-blocking
			 * reader shares its file (--duplex). */
			if (w < 0 && errno == EAGAIN) {
				struct pollfd pf = { .fd = f->wfd, .events = POLLOUT };
				struct epoll_event ev;

				f->waits++;
				/* Not writable: wait until it is, as long as the run lasts. */
				if (o_writer == W_EPOLL)
					epoll_wait(ep, &ev, 1, -1);
				else
					poll(&pf, 1, -1);
				continue;
			}
			f->werr = w < 0 ? errno : EPIPE;
			break;
		}
		sent += off;
	}
	if (!f->werr)
		shutdown(f->wfd, SHUT_WR);
	if (ep >= 0)
		close(ep);
	free(buf);
	return NULL;
}

static void *slow_reader(void *p)
{
	struct flow *f = p;

	f->rerr = recv_stream(f->rfd, o.bytes, f->seed, &f->got, &f->reset);
	return NULL;
}

/* TCP memory of the host (pages, /proc/net/sockstat) and free memory (kB). */
static void host_memory(long *tcp_pages, long *avail_kb)
{
	char line[256];
	FILE *fp = fopen("/proc/net/sockstat", "r");

	*tcp_pages = *avail_kb = -1;
	while (fp && fgets(line, sizeof(line), fp)) {
		char *m = strstr(line, " mem ");

		if (!strncmp(line, "TCP:", 4) && m)
			*tcp_pages = atol(m + 5);
	}
	if (fp)
		fclose(fp);
	fp = fopen("/proc/meminfo", "r");
	while (fp && fgets(line, sizeof(line), fp))
		if (!strncmp(line, "MemAvailable:", 13))
			*avail_kb = atol(line + 13);
	if (fp)
		fclose(fp);
}

static int cmd_slowreader(void)
{
	int nflows = o_conns * (o.duplex ? 2 : 1), lfd = o_remote ? -1 : make_listener(0), i, ok = 1;
	struct flow *fl = calloc(nflows, sizeof(*fl));
	uint64_t max = 0, total = 0, got = 0, waits = 0;
	long pages0, avail0, pages1, avail1;
	const char *err = NULL;
	char errbuf[200];

	for (i = 0; i < o_conns; i++) {
		int c, sfd;

		if (o_remote) {
			/* An echo server sends each connection's stream back to it;
			 * a relay pairs consecutive connections (--duplex). */
			c = connect_to(o.host, o.port);
			sfd = o.duplex ? connect_to(o.host, o.port) : c;
		} else {
			c = connect_to(o.family == 6 ? "::1" : "127.0.0.1", local_port(lfd));
			sfd = accept(lfd, NULL, NULL);
		}
		if (sfd < 0)
			die("accept", errno);
		fl[i * (o.duplex ? 2 : 1)] = (struct flow){ .wfd = c, .rfd = sfd, .seed = o.seed + 2 * i };
		if (o.duplex)
			fl[i * 2 + 1] = (struct flow){ .wfd = sfd, .rfd = c, .seed = o.seed + 2 * i + 1 };
	}
	if (lfd >= 0)
		close(lfd);
	host_memory(&pages0, &avail0);
	for (i = 0; i < nflows; i++)
		pthread_create(&fl[i].wt, NULL, slow_writer, &fl[i]);
	usleep(o_pause_ms * 1000);
	host_memory(&pages1, &avail1);
	for (i = 0; i < nflows; i++) {
		uint64_t a = __atomic_load_n(&fl[i].accepted, __ATOMIC_RELAXED);

		max = a > max ? a : max;
		total += a;
	}
	emit("{\"event\":\"paused\",\"acceptedMax\":%llu,\"acceptedTotal\":%llu}", (unsigned long long)max,
	     (unsigned long long)total);
	for (i = 0; i < nflows; i++)
		pthread_create(&fl[i].rt, NULL, slow_reader, &fl[i]);
	for (i = 0; i < nflows; i++) {
		pthread_join(fl[i].rt, NULL);
		/* A reader that gave up leaves its writer blocked: a reset frees it. */
		if (fl[i].rerr || fl[i].got != o.bytes)
			shutdown(fl[i].rfd, SHUT_RDWR);
	}
	for (i = 0; i < nflows; i++) {
		pthread_join(fl[i].wt, NULL);
		got += fl[i].got;
		waits += fl[i].waits;
		/* A reader's finding first: its writer then fails with EPIPE. */
		if (!err && (fl[i].rerr || fl[i].reset || (fl[i].got != o.bytes && !fl[i].werr))) {
			snprintf(errbuf, sizeof(errbuf), "flow %d: reader: %s (%llu of %llu bytes)", i,
				 fl[i].rerr ?: (fl[i].reset ? "reset" : "short"), (unsigned long long)fl[i].got,
				 (unsigned long long)o.bytes);
			err = errbuf;
		}
	}
	for (i = 0; i < nflows && !err; i++) {
		if (fl[i].werr) {
			snprintf(errbuf, sizeof(errbuf), "flow %d: writer: %s", i, strerror(fl[i].werr));
			err = errbuf;
		}
	}
	ok = !err;
	emit("{\"side\":\"slowreader\",\"ok\":%s,\"writer\":\"%s\",\"flows\":%d,\"acceptedMax\":%llu,"
	     "\"acceptedTotal\":%llu,\"writerWaits\":%llu,\"received\":%llu,\"tcpMemPagesDelta\":%ld,"
	     "\"memAvailableDropKb\":%ld,\"error\":%s%s%s}",
	     ok ? "true" : "false", writer_names[o_writer], nflows, (unsigned long long)max, (unsigned long long)total,
	     (unsigned long long)waits, (unsigned long long)got, pages1 - pages0, avail0 - avail1, err ? "\"" : "",
	     err ? err : "null", err ? "\"" : "");
	return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
	int i;

	if (argc < 2)
		usage();
	o.cmd = argv[1];
	for (i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int takes = 1;

		if (!strcmp(a, "--duplex"))
			o.duplex = 1, takes = 0;
		else if (!strcmp(a, "--hold"))
			o.hold = 1, takes = 0;
		else if (!strcmp(a, "--rst"))
			o.rst = 1, takes = 0;
		else if (!strcmp(a, "--early"))
			o.early = 1, takes = 0;
		else if (!strcmp(a, "--hold-end"))
			o.hold_end = 1, takes = 0;
		else if (!strcmp(a, "--hold-read"))
			o.hold_read = 1, takes = 0;
		else if (!strcmp(a, "--read-at-half-close"))
			o.read_at_half_close = 1, takes = 0;
		else if (!v)
			usage();
		else if (!strcmp(a, "--host"))
			o.host = v;
		else if (!strcmp(a, "--port"))
			o.port = atoi(v);
		else if (!strcmp(a, "--family"))
			o.family = atoi(v);
		else if (!strcmp(a, "--bytes"))
			o.bytes = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--back"))
			o.back = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--sizes"))
			o.sizes = v;
		else if (!strcmp(a, "--stall-ms"))
			o.stall_ms = atoi(v);
		else if (!strcmp(a, "--pace-us"))
			o.pace_us = atoi(v);
		else if (!strcmp(a, "--reply-delay-ms"))
			o.reply_delay_ms = atoi(v);
		else if (!strcmp(a, "--read-delay-ms"))
			o.read_delay_ms = atoi(v);
		else if (!strcmp(a, "--seed"))
			o.seed = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--concurrent"))
			o.concurrent = atoi(v);
		else if (!strcmp(a, "--sequential"))
			o.sequential = atoi(v);
		else if (!strcmp(a, "--timeout-s"))
			o.timeout_s = atoi(v);
		else if (!strcmp(a, "--conns"))
			o_conns = atoi(v) > 0 ? atoi(v) : 1;
		else if (!strcmp(a, "--pause-ms"))
			o_pause_ms = atoi(v);
		else if (!strcmp(a, "--writer")) {
			int k, found = 0;

			for (k = 0; k < (int)(sizeof(writer_names) / sizeof(*writer_names)); k++)
				if (!strcmp(v, writer_names[k]))
					o_writer = k, found = 1;
			if (!found)
				usage();
		} else if (!strcmp(a, "--reader") || !strcmp(a, "--back-reader")) {
			int k, found = 0;

			for (k = 0; k < (int)(sizeof(reader_names) / sizeof(*reader_names)); k++)
				if (!strcmp(v, reader_names[k]))
					*(!strcmp(a, "--reader") ? &o.reader : &o.back_reader) = k, found = 1;
			if (!found)
				usage();
		} else
			usage();
		i += takes;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_alarm);
	alarm(o.timeout_s);
	if (!strcmp(o.cmd, "pair"))
		return cmd_pair();
	if (!strcmp(o.cmd, "server"))
		return cmd_server();
	if (!strcmp(o.cmd, "client"))
		return cmd_client();
	if (!strcmp(o.cmd, "many"))
		return cmd_many();
	if (!strcmp(o.cmd, "pingpong"))
		return cmd_pingpong();
	if (!strcmp(o.cmd, "slowreader")) {
		o_remote = o.port != 0;
		return cmd_slowreader();
	}
	usage();
}
