// SPDX-License-Identifier: MIT
/*
 * ipcpair: one load pattern over two transports, so the bench can put the
 * fast path next to the limit of local IPC through the socket API. A
 * connected pair is made in this process, either an AF_UNIX stream pair or
 * a TCP connection over loopback (a listener on an ephemeral port, which a
 * sockops program of the process's cgroup sees like any other), then the
 * process forks: the parent writes, the child reads. Pinning is the
 * caller's (taskset), as for the bench's other tools.
 *
 *   ipcpair stream   --transport unix|tcp [--host H] --seconds S [--size B] [--read-size B] [--sndbuf B]
 *       the parent writes B-byte chunks (default 65536) for S seconds, then
 *       shuts down; the child reads until EOF. Prints
 *       {"transport":..,"bytes":N,"seconds":T,"gbps":G}, T measured from the
 *       first write to the child's EOF. --sndbuf sets the writer's send
 *       buffer with SO_SNDBUFFORCE (root; the kernel doubles it): on AF_UNIX
 *       that is how many bytes the writer may have unread before it sleeps,
 *       so a large one lets the writer run ahead of its reader as the fast
 *       path's redirect does (up to the fast path's queue limit).
 *   ipcpair pingpong --transport unix|tcp [--host H] --seconds S [--size B]
 *       B-byte messages (default 64) sent and echoed back, one at a time.
 *       Prints {"transport":..,"roundTrips":N,"p50us":..,"p99us":..}.
 *
 * --cpus A,B (either command) pins the parent (writer, pinger) to CPU A and
 * the child (reader, echo) to CPU B after the fork, e.g. 0,1 for a round
 * trip that always crosses CPUs, 0,0 for one that never does.
 *
 * Every socket call is bounded (5 s timeouts), so a stalled path ends in an
 * error, never a hang.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_S 5
/* Round-trip samples kept: room for one every 0.5 µs, at most 20 million. */
#define SAMPLES_PER_S (2 * 1000 * 1000)
#define MAX_SAMPLES (20 * 1000 * 1000)

struct opts {
	const char *cmd;
	const char *transport;
	const char *host;
	double seconds;
	size_t size;
	size_t read_size;
	long sndbuf;
	int cpu[2]; /* parent's and child's CPU, or -1 */
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static __attribute__((noreturn)) void die(const char *what)
{
	fprintf(stderr, "ipcpair: %s: %s\n", what, strerror(errno));
	exit(3);
}

static void set_timeouts(int fd)
{
	struct timeval tv = { .tv_sec = IO_TIMEOUT_S };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* A connected pair: fds[0] for the parent, fds[1] for the child. */
static void make_pair(const struct opts *o, int fds[2])
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int lfd, one = 1;

	if (!strcmp(o->transport, "unix")) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds))
			die("socketpair");
	} else {
		if (inet_pton(AF_INET, o->host, &a.sin_addr) != 1) {
			fprintf(stderr, "ipcpair: not an IPv4 address: %s\n", o->host);
			exit(2);
		}
		lfd = socket(AF_INET, SOCK_STREAM, 0);
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 1) ||
		    getsockname(lfd, (struct sockaddr *)&a, &len))
			die("listen");
		fds[0] = socket(AF_INET, SOCK_STREAM, 0);
		if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof(a)))
			die("connect");
		fds[1] = accept(lfd, NULL, NULL);
		if (fds[1] < 0)
			die("accept");
		close(lfd);
		setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(fds[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	set_timeouts(fds[0]);
	set_timeouts(fds[1]);
	if (o->sndbuf > 0) {
		int v = (int)o->sndbuf;
		socklen_t l = sizeof(v);

		if (setsockopt(fds[0], SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)))
			die("SO_SNDBUFFORCE");
		if (!getsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &v, &l))
			fprintf(stderr, "ipcpair: writer's SO_SNDBUF %d\n", v);
	}
}

static void pin_to(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("sched_setaffinity");
}

static int read_full(int fd, char *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);

		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			return -1;
		}
		got += (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const char *buf, size_t n)
{
	size_t put = 0;

	while (put < n) {
		ssize_t r = write(fd, buf + put, n - put);

		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			return -1;
		}
		put += (size_t)r;
	}
	return 0;
}

/* The child's end of a stream: read to EOF, hand back bytes and end time. */
static int stream_reader(int fd, int report, size_t read_size)
{
	char *buf = malloc(read_size);
	uint64_t bytes = 0;
	double end;
	ssize_t r;

	if (!buf)
		return 3;
	for (;;) {
		r = read(fd, buf, read_size);
		if (r > 0) {
			bytes += (uint64_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		break;
	}
	end = now();
	if (r < 0) {
		fprintf(stderr, "ipcpair: read: %s\n", strerror(errno));
		return 3;
	}
	if (write(report, &bytes, sizeof(bytes)) != sizeof(bytes) || write(report, &end, sizeof(end)) != sizeof(end))
		return 3;
	return 0;
}

static int stream(const struct opts *o, int fd, int report)
{
	char *buf = malloc(o->size);
	uint64_t bytes = 0;
	double start, stop, end = 0;

	if (!buf)
		return 3;
	memset(buf, 'x', o->size);
	start = now();
	stop = start + o->seconds;
	while (now() < stop) {
		if (write_full(fd, buf, o->size))
			die("write");
	}
	shutdown(fd, SHUT_WR);
	if (read(report, &bytes, sizeof(bytes)) != sizeof(bytes) || read(report, &end, sizeof(end)) != sizeof(end)) {
		fprintf(stderr, "ipcpair: the reader reported nothing\n");
		return 3;
	}
	printf("{\"transport\":\"%s\",\"bytes\":%llu,\"seconds\":%.6f,\"gbps\":%.3f}\n", o->transport,
	       (unsigned long long)bytes, end - start, end > start ? (double)bytes * 8 / (end - start) / 1e9 : 0.0);
	return 0;
}

static int echo(int fd, size_t size)
{
	char *buf = malloc(size);

	if (!buf)
		return 3;
	while (!read_full(fd, buf, size)) {
		if (write_full(fd, buf, size))
			return 3;
	}
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int pingpong(const struct opts *o, int fd)
{
	size_t n = 0,
	       max = o->seconds * SAMPLES_PER_S < MAX_SAMPLES ? (size_t)(o->seconds * SAMPLES_PER_S) + 1 : MAX_SAMPLES;
	double *rtt = malloc(sizeof(double) * max);
	char *buf = malloc(o->size);
	double stop, t0, t1;

	if (!rtt || !buf)
		return 3;
	memset(buf, 'p', o->size);
	stop = now() + o->seconds;
	for (t0 = now(); t0 < stop && n < max; t0 = t1) {
		if (write_full(fd, buf, o->size) || read_full(fd, buf, o->size))
			die("round trip");
		t1 = now();
		rtt[n++] = (t1 - t0) * 1e6;
	}
	shutdown(fd, SHUT_WR);
	if (!n)
		return 3;
	qsort(rtt, n, sizeof(double), cmp_double);
	printf("{\"transport\":\"%s\",\"roundTrips\":%zu,\"p50us\":%.3f,\"p99us\":%.3f}\n", o->transport, n, rtt[n / 2],
	       rtt[(size_t)((double)n * 0.99)]);
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: ipcpair stream|pingpong --transport unix|tcp [--host H] --seconds S [--size B] [--read-size B]\n"
		"                [--sndbuf B] [--cpus A,B]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct opts o = { .host = "127.0.0.1", .seconds = 0, .cpu = { -1, -1 } };
	int fds[2], report[2], status, rc;
	pid_t child;

	if (argc < 2)
		usage();
	o.cmd = argv[1];
	for (int i = 2; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			usage();
		if (!strcmp(a, "--transport"))
			o.transport = v;
		else if (!strcmp(a, "--host"))
			o.host = v;
		else if (!strcmp(a, "--seconds"))
			o.seconds = atof(v);
		else if (!strcmp(a, "--size"))
			o.size = (size_t)atol(v);
		else if (!strcmp(a, "--read-size"))
			o.read_size = (size_t)atol(v);
		else if (!strcmp(a, "--sndbuf"))
			o.sndbuf = atol(v);
		else if (!strcmp(a, "--cpus")) {
			if (sscanf(v, "%d,%d", &o.cpu[0], &o.cpu[1]) != 2 || o.cpu[0] < 0 || o.cpu[1] < 0)
				usage();
		} else
			usage();
	}
	if (!o.transport || (strcmp(o.transport, "unix") && strcmp(o.transport, "tcp")) || o.seconds <= 0 ||
	    o.seconds > 600 || (strcmp(o.cmd, "stream") && strcmp(o.cmd, "pingpong")))
		usage();
	if (!o.size)
		o.size = !strcmp(o.cmd, "stream") ? 65536 : 64;
	if (!o.read_size)
		o.read_size = o.size;
	if (o.size > (64u << 20) || o.read_size > (64u << 20) || o.sndbuf < 0 || o.sndbuf > (1l << 30))
		usage();
	signal(SIGPIPE, SIG_IGN);
	make_pair(&o, fds);
	if (pipe(report))
		die("pipe");
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		close(fds[0]);
		close(report[0]);
		pin_to(o.cpu[1]);
		_exit(!strcmp(o.cmd, "stream") ? stream_reader(fds[1], report[1], o.read_size) : echo(fds[1], o.size));
	}
	close(fds[1]);
	close(report[1]);
	pin_to(o.cpu[0]);
	rc = !strcmp(o.cmd, "stream") ? stream(&o, fds[0], report[0]) : pingpong(&o, fds[0]);
	close(fds[0]);
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || (WEXITSTATUS(status) && !rc)) {
		fprintf(stderr, "ipcpair: the child failed\n");
		return 3;
	}
	return rc;
}
