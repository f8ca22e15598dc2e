// SPDX-License-Identifier: GPL-2.0-only
/*
 * kdbg-agent: the lab's guest agent. It readies the guest, then serves
 * `kdbg lab exec` over TCP.
 *
 * It runs inside the guest as virtme-ng's boot command. kdbg builds it on the host
 * (statically linked, cached under $XDG_CACHE_HOME/kdbg/agent/) and the guest runs it
 * from the host's files over 9p: one file to load, so it starts in milliseconds under
 * TCG where a Python agent took two seconds.
 *
 * Setup, in order: tracefs and debugfs mounted (virtme-ng-init usually did it),
 * /lib/modules/$(uname -r)/{build,source} linked when the host's headers match,
 * loopback up, the exec NIC (found by MAC; the boot script modprobes its driver) at
 * 10.0.2.15/24, the KGDBoE NIC (if any) at its address, a root shell kept on the
 * interactive console tty. Then it listens and logs "ready on IP:PORT".
 *
 * Wire protocol, both ways: frames of kind (1 byte), length (4 bytes, big endian),
 * payload. Every connection must open with 'A' (authenticate) carrying the lab's exec
 * key, the 64 hex digits of --key-file (a mode-0600 file in the lab's state directory
 * on the host, read over 9p at start). Any other first frame, a wrong length or a
 * wrong key (compared in constant time) closes the connection at once, with nothing
 * run; so does silence for AUTH_MS. The exec port is a hostfwd on the host's
 * 127.0.0.1, open to every local user: the key is what keeps them out. Without a
 * readable key the agent does not serve at all. Then the client sends 'P' (ping; answered with 'P' and key=value lines of
 * guest facts) or 'R' (run; NUL-separated fields: stdin flag 0/1, cwd, argc, argv...,
 * then KEY=VALUE environment entries). During a run the client may send 'I' (stdin
 * bytes), 'C' (close stdin) and 'K' (signal number, ASCII); the agent sends 'O'
 * (stdout bytes), 'E' (stderr bytes) and finally 'X' (exit status, ASCII; 128+N when
 * killed by signal N). When the client goes away the agent kills the command's
 * process group. The stream has no timers of its own, so a guest halted by a debugger
 * only pauses it.
 *
 * Each connection is served by its own forked process, with one poll() loop.
 *
 * Usage: kdbg-agent --key-file PATH --exec-mac MAC [--shell-tty TTY]
 *                   [--oe-mac MAC --oe-cidr CIDR] [--bind IP] [--port N] [--serve-only]
 * --serve-only skips the guest setup (the host's tests serve on loopback with it).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HEADER_SIZE 5
#define MAX_FRAME (16u << 20)
#define CHUNK 65536
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define GUEST_EXEC_IP "10.0.2.15"
#define GUEST_PORT 7022
#define DRAIN_MS 2000	/* output still coming after the command exited */
#define KILL_GRACE_MS 3000	/* client gone: SIGTERM, then SIGKILL after this */
#define LINGER_MS 10000	/* after the exit frame: let the client read it */
#define AUTH_MS 10000	/* a new connection must authenticate within this */
#define KEY_LEN 64	/* hex digits of the exec key */

enum { AUTH = 'A', PING = 'P', RUN = 'R', STDIN_DATA = 'I', STDIN_EOF = 'C', SIGNAL = 'K',
       STDOUT_DATA = 'O', STDERR_DATA = 'E', EXIT = 'X' };

/* --- small helpers ------------------------------------------------------------------ */

static void logmsg(const char *fmt, ...)
{
	char up[32] = "?";
	FILE *f = fopen("/proc/uptime", "r");

	if (f) {
		if (fscanf(f, "%31s", up) != 1)
			strcpy(up, "?");
		fclose(f);
	}
	printf("[%8s] kdbg-agent: ", up);
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* The first line of a small file, without its newline ("" when unreadable). */
static void read_line(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "r");

	buf[0] = '\0';
	if (!f)
		return;
	if (!fgets(buf, (int)size, f))
		buf[0] = '\0';
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
}

static int is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void reset_signals(void)
{
	sigset_t none;

	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* --- frames ------------------------------------------------------------------------- */

static int send_frame(int fd, char kind, const void *payload, uint32_t len)
{
	unsigned char head[HEADER_SIZE] = { (unsigned char)kind, len >> 24, len >> 16,
					    len >> 8, len };
	struct iovec iov[2] = { { head, HEADER_SIZE }, { (void *)payload, len } };
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };

	while (iov[0].iov_len + iov[1].iov_len > 0) {
		ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		for (int i = 0; i < 2 && n > 0; i++) {
			size_t take = (size_t)n < iov[i].iov_len ? (size_t)n : iov[i].iov_len;

			iov[i].iov_base = (char *)iov[i].iov_base + take;
			iov[i].iov_len -= take;
			n -= (ssize_t)take;
		}
		if (iov[0].iov_len == 0) {
			msg.msg_iov = &iov[1];
			msg.msg_iovlen = 1;
		}
	}
	return 0;
}

/* 1: got n bytes; 0: end of stream; -1: error. */
static int recv_exact(int fd, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = recv(fd, (char *)buf + got, n - got, 0);

		if (r == 0)
			return 0;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		got += (size_t)r;
	}
	return 1;
}

/* One frame into *payload (malloc'd, NUL-terminated); 1 ok, 0 end, -1 error. */
static int recv_frame(int fd, char *kind, char **payload, uint32_t *len)
{
	unsigned char head[HEADER_SIZE];
	int r = recv_exact(fd, head, HEADER_SIZE);

	if (r <= 0)
		return r;
	*kind = (char)head[0];
	*len = (uint32_t)head[1] << 24 | (uint32_t)head[2] << 16 | (uint32_t)head[3] << 8 | head[4];
	if (*len > MAX_FRAME) {
		logmsg("connection: frame of %u bytes", *len);
		return -1;
	}
	*payload = malloc(*len + 1);
	if (!*payload)
		return -1;
	r = *len ? recv_exact(fd, *payload, *len) : 1;
	if (r <= 0) {
		free(*payload);
		*payload = NULL;
		return r;
	}
	(*payload)[*len] = '\0';
	return 1;
}

/* --- guest setup -------------------------------------------------------------------- */

static void mount_fs(void)
{
	static const char *const fs[][2] = { { "tracefs", "/sys/kernel/tracing" },
					     { "debugfs", "/sys/kernel/debug" } };
	char line[1024];
	int mounted[2] = { 0, 0 };
	FILE *f = fopen("/proc/mounts", "r");

	while (f && fgets(line, sizeof(line), f)) {
		char where[512];

		if (sscanf(line, "%*s %511s", where) != 1)
			continue;
		for (int i = 0; i < 2; i++)
			mounted[i] |= strcmp(where, fs[i][1]) == 0;
	}
	if (f)
		fclose(f);
	for (int i = 0; i < 2; i++)
		if (!mounted[i] && mount("nodev", fs[i][1], fs[i][0], 0, NULL) != 0)
			logmsg("cannot mount %s on %s: %s", fs[i][0], fs[i][1], strerror(errno));
}

static void mkdirs(const char *path)
{
	char buf[512];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(buf, 0755);
			*p = '/';
		}
	}
	mkdir(buf, 0755);
}

/* The newest /usr/src/linux-headers-*FLAVOUR into out (0), or -1 when there is none. */
static int newest_headers(const char *flavour, char *out, size_t size)
{
	DIR *d = opendir("/usr/src");
	struct dirent *e;
	char best[256] = "", dir[400];
	size_t fl = strlen(flavour);

	if (!d || !fl)
		goto done;
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);

		if (strncmp(e->d_name, "linux-headers-", 14) != 0 || n <= 14 + fl ||
		    strcmp(e->d_name + n - fl, flavour) != 0 || n >= sizeof(best))
			continue;
		snprintf(dir, sizeof(dir), "/usr/src/%s", e->d_name);
		if (is_dir(dir) && (!best[0] || strverscmp(e->d_name, best) > 0))
			snprintf(best, sizeof(best), "%s", e->d_name);
	}
done:
	if (d)
		closedir(d);
	if (!best[0])
		return -1;
	snprintf(out, size, "/usr/src/%s", best);
	return 0;
}

/* /lib/modules/REL/{build,source} -> the host's headers for REL. When the host has none
 * for REL (a Debian 6.12 lab on a host with 6.1 headers), the newest installed headers of
 * the same flavour and their -common, as scripts/setup.sh does for the host kernel: bcc
 * needs some headers to compile, and the tracer takes every struct offset from the
 * running kernel's BTF, never from them. A dangling link is replaced. */
static void link_headers(void)
{
	struct utsname u;
	char moddir[300], base[256], flavour[64] = "", target[2][400], path[400];
	static const char *const links[2] = { "build", "source" };
	struct stat st;

	uname(&u);
	snprintf(moddir, sizeof(moddir), "/lib/modules/%s", u.release);
	snprintf(base, sizeof(base), "%s", u.release);
	char *dash = strrchr(base, '-');
	if (dash) {
		snprintf(flavour, sizeof(flavour), "%s", dash);
		*dash = '\0';
	}
	snprintf(target[0], sizeof(target[0]), "/usr/src/linux-headers-%s", u.release);
	snprintf(target[1], sizeof(target[1]), "/usr/src/linux-headers-%s-common", base);
	if (!is_dir(target[0]) && newest_headers(flavour, target[0], sizeof(target[0])) == 0) {
		int keep = (int)(strlen(target[0]) - strlen(flavour));

		snprintf(target[1], sizeof(target[1]), "%.*s-common", keep, target[0]);
		logmsg("no headers for %s: linking %s for bcc (offsets come from BTF)",
		       u.release, target[0]);
	}
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", moddir, links[i]);
		if (stat(path, &st) == 0 || !is_dir(target[i]))
			continue;
		mkdirs(moddir);
		unlink(path);
		if (symlink(target[i], path) != 0)
			logmsg("cannot link %s: %s", path, strerror(errno));
	}
}

/* Set cidr (if any) on the interface and bring it up, with ioctls. */
static int iface_config(const char *name, const char *cidr)
{
	struct ifreq req;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int rc = -1;

	if (s < 0)
		return -1;
	memset(&req, 0, sizeof(req));
	snprintf(req.ifr_name, IFNAMSIZ, "%s", name);
	if (cidr) {
		char ip[64];
		int bits = 32;
		struct sockaddr_in *sin = (struct sockaddr_in *)&req.ifr_addr;

		snprintf(ip, sizeof(ip), "%s", cidr);
		char *slash = strchr(ip, '/');
		if (slash) {
			*slash = '\0';
			bits = atoi(slash + 1);
		}
		sin->sin_family = AF_INET;
		if (inet_pton(AF_INET, ip, &sin->sin_addr) != 1) {
			errno = EINVAL;
			goto out;
		}
		if (ioctl(s, SIOCSIFADDR, &req) != 0)
			goto out;
		sin->sin_addr.s_addr = htonl(bits ? 0xffffffffu << (32 - bits) : 0);
		if (ioctl(s, SIOCSIFNETMASK, &req) != 0)
			goto out;
	}
	if (ioctl(s, SIOCGIFFLAGS, &req) != 0)
		goto out;
	req.ifr_flags |= IFF_UP;
	rc = ioctl(s, SIOCSIFFLAGS, &req);
out:
	close(s);
	return rc;
}

/* The interface with this MAC, waiting for its driver to bind (up to 60 s). */
static int iface_by_mac(const char *mac, char *name, size_t size)
{
	long long deadline = now_ms() + 60000;

	for (;;) {
		DIR *d = opendir("/sys/class/net");
		struct dirent *e;

		while (d && (e = readdir(d))) {
			char path[300], addr[64];

			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/sys/class/net/%s/address", e->d_name);
			read_line(path, addr, sizeof(addr));
			if (strcasecmp(addr, mac) == 0) {
				snprintf(name, size, "%s", e->d_name);
				closedir(d);
				return 0;
			}
		}
		if (d)
			closedir(d);
		if (now_ms() > deadline)
			return -1;
		usleep(50000);
	}
}

static int setup_nic(const char *mac, const char *cidr)
{
	char name[256];

	if (iface_by_mac(mac, name, sizeof(name)) != 0) {
		logmsg("no NIC with MAC %s", mac);
		return -1;
	}
	if (iface_config(name, cidr) != 0) {
		logmsg("cannot configure %s: %s", name, strerror(errno));
		return -1;
	}
	logmsg("%s (%s) at %s", name, mac, cidr);
	return 0;
}

/* Keep a root shell on tty (the interactive console), respawning it. */
static void shell_on(const char *tty)
{
	if (access(tty, F_OK) != 0 || fork() != 0)
		return;
	reset_signals();
	for (;;) {
		pid_t pid = fork();

		if (pid == 0) {
			const char *shell = access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh";
			char *bash_argv[] = { (char *)shell, "--norc", "-i", NULL };
			char *sh_argv[] = { (char *)shell, "-i", NULL };
			char *env[] = { "TERM=linux", "PATH=" DEFAULT_PATH, "HOME=/root", "PS1=lab# ", NULL };

			setsid();
			int fd = open(tty, O_RDWR); /* the first tty opened: the controlling tty */
			if (fd < 0)
				_exit(127);
			for (int std = 0; std < 3; std++)
				dup2(fd, std);
			execve(shell, strstr(shell, "bash") ? bash_argv : sh_argv, env);
			_exit(127);
		}
		if (pid > 0)
			waitpid(pid, NULL, 0);
		sleep(1);
	}
}

/* --- one command -------------------------------------------------------------------- */

struct session {
	int conn;
	pid_t pid;
	int out_fd, err_fd, in_fd;
	int client_gone, exited, status;
	int stdin_eof;		/* close stdin once pending is written */
	char *pending;		/* stdin bytes not yet taken by the command */
	size_t pending_len, pending_off;
};

static int sigchld_pipe[2] = { -1, -1 };

static void on_sigchld(int sig)
{
	int saved = errno;

	(void)sig;
	if (write(sigchld_pipe[1], "c", 1) < 0) {
		/* full: a wake-up is already pending */
	}
	errno = saved;
}

static void sess_send(struct session *s, char kind, const void *data, uint32_t len)
{
	if (!s->client_gone && send_frame(s->conn, kind, data, len) != 0)
		s->client_gone = 1;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Fork+exec argv in its own session; an error message in err (and -1) if exec failed. */
static int spawn(struct session *s, char **argv, char **env, const char *cwd, int want_stdin,
		 char *err, size_t errsize)
{
	int out[2], errp[2], in[2], ex[2];

	if (pipe2(out, O_CLOEXEC) || pipe2(errp, O_CLOEXEC) || pipe2(ex, O_CLOEXEC))
		goto fail;
	if (want_stdin) {
		if (pipe2(in, O_CLOEXEC))
			goto fail;
	} else {
		in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		in[1] = -1;
	}
	s->pid = fork();
	if (s->pid < 0)
		goto fail;
	if (s->pid == 0) {
		reset_signals();
		setsid();
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(errp[1], 2);
		if (chdir(cwd) == 0)
			execvpe(argv[0], argv, env);
		const char *msg = strerror(errno);
		if (write(ex[1], msg, strlen(msg)) < 0) {
			/* the parent sees EOF and an exit status of 127 */
		}
		_exit(127);
	}
	close(out[1]);
	close(errp[1]);
	close(in[0]);
	close(ex[1]);
	s->out_fd = out[0];
	s->err_fd = errp[0];
	s->in_fd = in[1];
	if (s->in_fd >= 0)
		fcntl(s->in_fd, F_SETFL, O_NONBLOCK);
	ssize_t n;
	do
		n = read(ex[0], err, errsize - 1);
	while (n < 0 && errno == EINTR);
	close(ex[0]);
	err[n > 0 ? n : 0] = '\0';
	return n > 0 ? -1 : 0;
fail:
	snprintf(err, errsize, "%s", strerror(errno));
	s->pid = 0;
	return -1;
}

static void reap(struct session *s, int options)
{
	int st;

	if (s->exited || !s->pid)
		return;
	if (waitpid(s->pid, &st, options) == s->pid) {
		s->exited = 1;
		s->status = WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
	}
}

static void killpg_cmd(struct session *s, int sig)
{
	if (s->pid && !s->exited)
		kill(-s->pid, sig);
}

/* The client went away while the command runs: hang up, terminate, then kill. */
static void client_gone(struct session *s)
{
	s->client_gone = 1;
	killpg_cmd(s, SIGHUP);
	killpg_cmd(s, SIGTERM);
	long long deadline = now_ms() + KILL_GRACE_MS;
	while (!s->exited && now_ms() < deadline) {
		reap(s, WNOHANG);
		if (!s->exited)
			usleep(50000);
	}
	killpg_cmd(s, SIGKILL);
	reap(s, 0);
}

static void feed_stdin(struct session *s)
{
	while (s->in_fd >= 0 && s->pending_off < s->pending_len) {
		ssize_t n = write(s->in_fd, s->pending + s->pending_off,
				  s->pending_len - s->pending_off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			close_fd(&s->in_fd); /* EPIPE: the command does not read its stdin */
			break;
		}
		s->pending_off += (size_t)n;
	}
	free(s->pending);
	s->pending = NULL;
	s->pending_len = s->pending_off = 0;
	if (s->stdin_eof)
		close_fd(&s->in_fd);
}

/* One frame from the client during a run; 0 when the client is gone. */
static int client_frame(struct session *s)
{
	char kind, *payload = NULL;
	uint32_t len;

	if (recv_frame(s->conn, &kind, &payload, &len) <= 0)
		return 0;
	if (kind == STDIN_DATA && s->in_fd >= 0) {
		s->pending = payload;
		s->pending_len = len;
		s->pending_off = 0;
		payload = NULL;
		feed_stdin(s);
	} else if (kind == STDIN_EOF) {
		s->stdin_eof = 1;
		if (!s->pending)
			close_fd(&s->in_fd);
	} else if (kind == SIGNAL) {
		killpg_cmd(s, atoi(payload));
	}
	free(payload);
	return 1;
}

static void pump(struct session *s, int *fd, char kind)
{
	static char buf[CHUNK];
	ssize_t n = read(*fd, buf, sizeof(buf));

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0)
		close_fd(fd);
	else
		sess_send(s, kind, buf, (uint32_t)n);
}

static void run_loop(struct session *s)
{
	long long drain_until = 0;

	for (;;) {
		struct pollfd p[5];
		int n = 0, i_conn = -1, i_out = -1, i_err = -1, i_chld = -1, i_in = -1;

		if (s->exited && (s->out_fd < 0 && s->err_fd < 0))
			break;
		if (!s->client_gone && !s->pending) {
			i_conn = n;
			p[n++] = (struct pollfd){ s->conn, POLLIN, 0 };
		}
		if (s->out_fd >= 0) {
			i_out = n;
			p[n++] = (struct pollfd){ s->out_fd, POLLIN, 0 };
		}
		if (s->err_fd >= 0) {
			i_err = n;
			p[n++] = (struct pollfd){ s->err_fd, POLLIN, 0 };
		}
		if (!s->exited) {
			i_chld = n;
			p[n++] = (struct pollfd){ sigchld_pipe[0], POLLIN, 0 };
		}
		if (s->pending && s->in_fd >= 0) {
			i_in = n;
			p[n++] = (struct pollfd){ s->in_fd, POLLOUT, 0 };
		}
		int timeout = -1;
		if (s->exited) {
			long long left = drain_until - now_ms();
			if (left <= 0)
				break; /* something in the background still holds the pipes */
			timeout = (int)left;
		}
		if (poll(p, (nfds_t)n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (i_out >= 0 && p[i_out].revents)
			pump(s, &s->out_fd, STDOUT_DATA);
		if (i_err >= 0 && p[i_err].revents)
			pump(s, &s->err_fd, STDERR_DATA);
		if (i_in >= 0 && p[i_in].revents)
			feed_stdin(s);
		if (s->pending && s->in_fd < 0)
			feed_stdin(s); /* stdin closed under it: drop what was pending */
		if (i_conn >= 0 && p[i_conn].revents && !client_frame(s)) {
			if (!s->exited)
				client_gone(s);
			s->client_gone = 1;
		}
		if (i_chld >= 0 && p[i_chld].revents) {
			char drain[64];
			while (read(sigchld_pipe[0], drain, sizeof(drain)) > 0)
				;
		}
		if (!s->exited) {
			reap(s, WNOHANG);
			if (s->exited)
				drain_until = now_ms() + DRAIN_MS;
		}
	}
	close_fd(&s->out_fd);
	close_fd(&s->err_fd);
	close_fd(&s->in_fd);
	free(s->pending);
	s->pending = NULL;
}

/* Split the R payload; argv and env point into payload. */
static int decode_run(char *payload, uint32_t len, char ***argv, char ***env, char **cwd,
		      int *want_stdin)
{
	size_t nfields = 0, cap = 16, argc;
	char **fields = malloc(cap * sizeof(*fields));

	if (!fields)
		return -1;
	for (char *p = payload; p <= payload + len; p += strlen(p) + 1) {
		if (nfields + 1 >= cap) {
			cap *= 2;
			char **grown = realloc(fields, cap * sizeof(*fields));
			if (!grown)
				return -1;
			fields = grown;
		}
		fields[nfields++] = p;
	}
	if (nfields < 3)
		return -1;
	*want_stdin = strcmp(fields[0], "1") == 0;
	*cwd = fields[1];
	argc = strtoul(fields[2], NULL, 10);
	if (argc > nfields - 3)
		return -1;
	*argv = calloc(argc + 1, sizeof(char *));
	static const char *const base[] = { "PATH=" DEFAULT_PATH, "HOME=/root", "LANG=C.UTF-8",
					    "TERM=dumb" };
	size_t nbase = sizeof(base) / sizeof(base[0]);
	*env = calloc(nbase + nfields + 1, sizeof(char *));
	if (!*argv || !*env)
		return -1;
	memcpy(*argv, fields + 3, argc * sizeof(char *));
	size_t ne = 0;
	for (size_t i = 0; i < nbase; i++)
		(*env)[ne++] = (char *)base[i];
	for (size_t i = 3 + argc; i < nfields; i++) {
		char *eq = strchr(fields[i], '=');
		if (!eq)
			continue;
		size_t klen = (size_t)(eq - fields[i]) + 1;
		size_t j;
		for (j = 0; j < ne; j++)
			if (strncmp((*env)[j], fields[i], klen) == 0)
				break;
		(*env)[j] = fields[i];
		if (j == ne)
			ne++;
	}
	free(fields);
	return (int)argc;
}

/* Close after the client has read everything: closing with unread client data (stdin
 * nobody wanted) would reset the connection and could lose the exit frame. */
static void linger_close(int conn)
{
	char buf[CHUNK];
	long long deadline = now_ms() + LINGER_MS;

	shutdown(conn, SHUT_WR);
	for (;;) {
		long long left = deadline - now_ms();
		struct pollfd p = { conn, POLLIN, 0 };

		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			break;
		if (recv(conn, buf, sizeof(buf), 0) <= 0)
			break;
	}
	close(conn);
}

static void run_command(int conn, char *payload, uint32_t len)
{
	struct session s = { .conn = conn, .out_fd = -1, .err_fd = -1, .in_fd = -1 };
	char **argv, **env, *cwd, err[512];
	int want_stdin;

	if (decode_run(payload, len, &argv, &env, &cwd, &want_stdin) <= 0) {
		sess_send(&s, EXIT, "127", 3);
		return;
	}
	if (pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
		sess_send(&s, EXIT, "127", 3);
		return;
	}
	struct sigaction sa = { .sa_handler = on_sigchld, .sa_flags = SA_RESTART | SA_NOCLDSTOP };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);
	if (spawn(&s, argv, env, cwd, want_stdin, err, sizeof(err)) != 0) {
		char msg[1024];
		int n = snprintf(msg, sizeof(msg), "kdbg-agent: %s: %s\n", argv[0], err);

		reap(&s, 0);
		close_fd(&s.out_fd);
		close_fd(&s.err_fd);
		close_fd(&s.in_fd);
		sess_send(&s, STDERR_DATA, msg, (uint32_t)(n < (int)sizeof(msg) ? n : (int)sizeof(msg) - 1));
		sess_send(&s, EXIT, "127", 3);
		return;
	}
	run_loop(&s);
	if (!s.exited)
		client_gone(&s);
	char code[16];
	int n = snprintf(code, sizeof(code), "%d", s.status);
	sess_send(&s, EXIT, code, (uint32_t)n);
}

/* --- authentication ---------------------------------------------------------------- */

static char exec_key[KEY_LEN + 1];

/* The exec key from path: exactly KEY_LEN lowercase hex digits (a trailing newline is
 * allowed). Returns 0, or -1 with a reason in why (the key itself is never logged). */
static int load_key(const char *path, const char **why)
{
	char buf[KEY_LEN + 3];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	*why = "unreadable";
	if (fd < 0)
		return -1;
	do
		n = read(fd, buf, sizeof(buf) - 1);
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n < 0)
		return -1;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	*why = "not 64 hex digits";
	if (n != KEY_LEN)
		return -1;
	for (int i = 0; i < KEY_LEN; i++)
		if (!((buf[i] >= '0' && buf[i] <= '9') || (buf[i] >= 'a' && buf[i] <= 'f')))
			return -1;
	memcpy(exec_key, buf, KEY_LEN);
	exec_key[KEY_LEN] = '\0';
	return 0;
}

/* 1 when the first frame is 'A' with the exec key. Reads the header first and takes
 * no payload of any other size, so nothing unauthenticated is ever allocated. */
static int authenticated(int conn)
{
	struct timeval tv = { AUTH_MS / 1000, 0 }, none = { 0, 0 };
	unsigned char head[HEADER_SIZE];
	char got[KEY_LEN];
	unsigned char diff = 0;
	int ok = 0;

	setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (recv_exact(conn, head, HEADER_SIZE) == 1 && head[0] == AUTH && head[1] == 0 &&
	    head[2] == 0 && head[3] == 0 && head[4] == KEY_LEN &&
	    recv_exact(conn, got, KEY_LEN) == 1) {
		for (int i = 0; i < KEY_LEN; i++)
			diff |= (unsigned char)(got[i] ^ exec_key[i]);
		ok = diff == 0;
	}
	setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
	return ok;
}

/* --- serving ------------------------------------------------------------------------ */

static void send_facts(int conn)
{
	struct utsname u;
	char boot_id[64], cmdline[4096], path[400], facts[8192];

	uname(&u);
	read_line("/proc/sys/kernel/random/boot_id", boot_id, sizeof(boot_id));
	read_line("/proc/cmdline", cmdline, sizeof(cmdline));
	snprintf(path, sizeof(path), "/lib/modules/%s/build/include", u.release);
	int n = snprintf(facts, sizeof(facts),
			 "release=%s\nboot_id=%s\ncmdline=%s\ntracefs=%d\nheaders=%d\n",
			 u.release, boot_id, cmdline,
			 access("/sys/kernel/tracing/events", F_OK) == 0, access(path, F_OK) == 0);
	send_frame(conn, PING, facts, (uint32_t)(n < (int)sizeof(facts) ? n : (int)sizeof(facts) - 1));
}

static void handle(int conn)
{
	char kind, *payload = NULL;
	uint32_t len;

	if (!authenticated(conn)) {
		logmsg("refused a connection without the exec key");
		close(conn);
		return;
	}
	int r = recv_frame(conn, &kind, &payload, &len);

	if (r < 0)
		logmsg("connection: %s", strerror(errno));
	if (r > 0 && kind == PING)
		send_facts(conn);
	else if (r > 0 && kind == RUN)
		run_command(conn, payload, len);
	free(payload);
	linger_close(conn);
}

static int serve(const char *bind_ip, int port)
{
	int srv = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	socklen_t alen = sizeof(addr);

	if (srv < 0 || inet_pton(AF_INET, bind_ip, &addr.sin_addr) != 1 ||
	    setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(srv, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(srv, 16) != 0 ||
	    getsockname(srv, (struct sockaddr *)&addr, &alen) != 0) {
		logmsg("cannot listen on %s:%d: %s", bind_ip, port, strerror(errno));
		return 1;
	}
	logmsg("ready on %s:%d", bind_ip, ntohs(addr.sin_port));
	for (;;) {
		int conn = accept4(srv, NULL, NULL, SOCK_CLOEXEC);

		if (conn < 0) {
			if (errno != EINTR && errno != ECONNABORTED)
				usleep(100000);
			continue;
		}
		setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		pid_t pid = fork();
		if (pid == 0) {
			close(srv);
			signal(SIGCHLD, SIG_DFL);
			handle(conn);
			_exit(0);
		}
		if (pid < 0)
			logmsg("cannot fork: %s", strerror(errno));
		close(conn);
	}
}

int main(int argc, char **argv)
{
	const char *exec_mac = NULL, *shell_tty = NULL, *oe_mac = NULL, *oe_cidr = NULL;
	const char *key_file = NULL, *why;
	const char *bind_ip = GUEST_EXEC_IP;
	int port = GUEST_PORT, setup = 1;

	for (int i = 1; i < argc; i++) {
		const char *key = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(key, "--serve-only") == 0) {
			setup = 0;
			continue;
		}
		if (!value || strncmp(key, "--", 2) != 0) {
			fprintf(stderr, "kdbg-agent: bad argument %s\n", key);
			return 2;
		}
		i++;
		if (strcmp(key, "--exec-mac") == 0)
			exec_mac = value;
		else if (strcmp(key, "--shell-tty") == 0)
			shell_tty = value;
		else if (strcmp(key, "--oe-mac") == 0)
			oe_mac = value;
		else if (strcmp(key, "--oe-cidr") == 0)
			oe_cidr = value;
		else if (strcmp(key, "--key-file") == 0)
			key_file = value;
		else if (strcmp(key, "--bind") == 0)
			bind_ip = value;
		else if (strcmp(key, "--port") == 0)
			port = atoi(value);
		else {
			fprintf(stderr, "kdbg-agent: unknown option %s\n", key);
			return 2;
		}
	}
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_IGN); /* connection handlers and setup helpers reap themselves */
	logmsg("started");
	if (!key_file) {
		fprintf(stderr, "kdbg-agent: --key-file is required\n");
		return 2;
	}
	if (load_key(key_file, &why) != 0) {
		logmsg("cannot use the exec key %s (%s): not serving", key_file, why);
		return 1;
	}
	if (setup) {
		mount_fs();
		link_headers();
		iface_config("lo", NULL);
		if (!exec_mac) {
			fprintf(stderr, "kdbg-agent: --exec-mac is required\n");
			return 2;
		}
		if (setup_nic(exec_mac, GUEST_EXEC_IP "/24") != 0)
			return 1;
		if (oe_mac && oe_cidr)
			setup_nic(oe_mac, oe_cidr);
		if (shell_tty)
			shell_on(shell_tty);
	}
	return serve(bind_ip, port);
}
