// SPDX-License-Identifier: MIT
/*
 * connrate: new TCP connections per second, one after another, each a full
 * life: connect, a 1-byte request, a 1-byte answer, close. What it measures
 * is the per-connection cost of the path (handshake, sockops callbacks,
 * proxy accept and upstream connect), not bandwidth. Used by `accel bench`.
 *
 *   connrate server --port P [--host H]
 *       answers every connection; prints {"event":"listening",...} once
 *   connrate client --port P [--host H] --seconds S [--max N]
 *       prints {"connections":N,"failures":F,"seconds":T,"perSecond":R}
 *
 * Every socket call is bounded (2 s send/receive timeouts), so a path that
 * drops a connection costs a failure, never a hang.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_S 2

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void set_timeouts(int fd)
{
	struct timeval tv = { .tv_sec = IO_TIMEOUT_S };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int resolve(const char *host, const char *port, int passive, struct addrinfo **out)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | (passive ? AI_PASSIVE : 0) };
	int rc = getaddrinfo(host, port, &hints, out);

	if (rc)
		fprintf(stderr, "connrate: %s:%s: %s\n", host, port, gai_strerror(rc));
	return rc;
}

/* One exchange on a connected socket: 1 byte each way. */
static int exchange(int fd, int first)
{
	char b = 'x';

	if (first)
		return send(fd, &b, 1, MSG_NOSIGNAL) == 1 && recv(fd, &b, 1, 0) == 1 ? 0 : -1;
	return recv(fd, &b, 1, 0) == 1 && send(fd, &b, 1, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

static int serve(const char *host, const char *port)
{
	struct addrinfo *ai;
	int one = 1, lfd;

	if (resolve(host, port, 1, &ai))
		return 2;
	lfd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(lfd, ai->ai_addr, ai->ai_addrlen) || listen(lfd, 4096)) {
		fprintf(stderr, "connrate: listen on %s:%s: %s\n", host, port, strerror(errno));
		return 3;
	}
	freeaddrinfo(ai);
	printf("{\"event\":\"listening\",\"host\":\"%s\",\"port\":%s,\"pid\":%d}\n", host, port, getpid());
	fflush(stdout);
	while (!stopping) {
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			continue; /* EINTR on SIGTERM, or a connection reset while queued */
		set_timeouts(fd);
		exchange(fd, 0);
		close(fd);
	}
	close(lfd);
	return 0;
}

static int client(const char *host, const char *port, double seconds, long max)
{
	struct addrinfo *ai;
	long done = 0, failed = 0;
	double start, end, t;

	if (resolve(host, port, 0, &ai))
		return 2;
	start = now();
	end = start + seconds;
	for (t = start; t < end && done + failed < max && !stopping; t = now()) {
		int fd = socket(ai->ai_family, SOCK_STREAM, 0);

		if (fd < 0) {
			fprintf(stderr, "connrate: socket: %s\n", strerror(errno));
			return 3;
		}
		set_timeouts(fd);
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 && exchange(fd, 1) == 0)
			done++;
		else
			failed++;
		close(fd);
	}
	freeaddrinfo(ai);
	t = now() - start;
	printf("{\"connections\":%ld,\"failures\":%ld,\"seconds\":%.6f,\"perSecond\":%.1f}\n", done, failed, t,
	       t > 0 ? (double)done / t : 0.0);
	return failed > done ? 1 : 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: connrate server --port P [--host H]\n"
			"       connrate client --port P [--host H] --seconds S [--max N]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *port = NULL;
	double seconds = 1;
	long max = 10000000;
	struct sigaction sa = { .sa_handler = on_signal };
	int i;

	if (argc < 2)
		usage();
	for (i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--host"))
			host = argv[i + 1];
		else if (!strcmp(argv[i], "--port"))
			port = argv[i + 1];
		else if (!strcmp(argv[i], "--seconds"))
			seconds = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--max"))
			max = atol(argv[i + 1]);
		else
			usage();
	}
	if (i != argc || !port || seconds <= 0 || max <= 0)
		usage();
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (!strcmp(argv[1], "server"))
		return serve(host, port);
	if (!strcmp(argv[1], "client"))
		return client(host, port, seconds, max);
	usage();
	return 2;
}
