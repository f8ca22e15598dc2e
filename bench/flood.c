/* UDP flood for bench/drop_storm.py: send as fast as one core can, for N seconds.
 * usage: flood SRC DST PORT SECONDS   (IPv4; runs inside the benchmark's namespace)
 *
 * sendmmsg() hands the kernel 64 datagrams per system call, so the time goes into the
 * network stack and the drop, not into system call entry: about a million drops a
 * second here, where a sendto() loop makes 300,000 (each tracer's cost per drop then
 * weighs three times as much against the baseline). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

int main(int argc, char **argv)
{
	struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
	struct mmsghdr msgs[BATCH];
	struct iovec iov = {0};
	struct timespec now, end;
	unsigned long sent = 0;
	char payload[16] = "kdbg-bench";
	int fd, n;

	if (argc != 5) {
		fprintf(stderr, "usage: %s SRC DST PORT SECONDS\n", argv[0]);
		return 2;
	}
	inet_pton(AF_INET, argv[1], &src.sin_addr);
	inet_pton(AF_INET, argv[2], &dst.sin_addr);
	src.sin_port = htons(40000);
	dst.sin_port = htons(atoi(argv[3]));
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0 ||
	    connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
		perror("socket/bind/connect");
		return 1;
	}
	iov.iov_base = payload;
	iov.iov_len = sizeof(payload);
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += atoi(argv[4]);
	for (;;) {
		for (int i = 0; i < 16; i++) {
			n = sendmmsg(fd, msgs, BATCH, 0);
			if (n > 0)
				sent += n;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > end.tv_sec ||
		    (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec))
			break;
	}
	printf("%lu\n", sent);
	return 0;
}
