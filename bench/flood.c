/* UDP flood for bench/drop_storm.py: send as fast as one core can, for N seconds.
 * usage: flood SRC DST PORT SECONDS   (IPv4; runs inside the benchmark's namespace) */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
	struct timespec now, end;
	unsigned long sent = 0;
	char payload[16] = "kdbg-bench";
	int fd;

	if (argc != 5) {
		fprintf(stderr, "usage: %s SRC DST PORT SECONDS\n", argv[0]);
		return 2;
	}
	inet_pton(AF_INET, argv[1], &src.sin_addr);
	inet_pton(AF_INET, argv[2], &dst.sin_addr);
	src.sin_port = htons(40000);
	dst.sin_port = htons(atoi(argv[3]));
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
		perror("socket/bind");
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += atoi(argv[4]);
	for (;;) {
		for (int i = 0; i < 256; i++)
			if (sendto(fd, payload, sizeof(payload), 0, (struct sockaddr *)&dst,
				   sizeof(dst)) > 0)
				sent++;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > end.tv_sec ||
		    (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec))
			break;
	}
	printf("%lu\n", sent);
	return 0;
}
