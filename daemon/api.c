/* The control API server.  A method table maps names to handlers; every
 * connection is served by its own thread so a long pull does not block a
 * listing. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "api.h"
#include "log.h"

struct api_server {
	int fd;
	int wake[2];		/* self-pipe: api_stop writes, serve wakes */
	char path[108];
	const struct api_method *methods;
	void *ctx;
	_Atomic int active;	/* connection threads running */
	pthread_mutex_t lock;	/* conns */
	int conns[256];		/* open connection fds, -1 = free */
};

struct api_call {
	int fd;
	bool gone;
};

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EPIPE;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static void send_json(struct api_call *call, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT);

	if (!s || call->gone) {
		free(s);
		return;
	}
	if (write_all(call->fd, s, strlen(s)) < 0 || write_all(call->fd, "\n", 1) < 0)
		call->gone = true;
	free(s);
}

void api_event(struct api_call *call, json_t *ev)
{
	send_json(call, ev);
	json_decref(ev);
}

bool api_call_gone(struct api_call *call)
{
	return call->gone;
}

static const struct api_method *method_find(struct api_server *s, const char *name)
{
	for (const struct api_method *m = s->methods; m->name; m++)
		if (!strcmp(m->name, name))
			return m;
	return NULL;
}

static void handle(struct api_server *s, struct api_call *call, const char *line)
{
	struct daxfs_err err = { 0 };
	json_t *req, *params, *result = NULL, *resp;
	const struct api_method *m = NULL;
	json_error_t je;
	int rc;

	req = json_loads(line, 0, &je);
	if (!req || !json_is_object(req) ||
	    !json_is_string(json_object_get(req, "method"))) {
		rc = daxfs_err_set(&err, -EINVAL, "bad request: %s",
				   req ? "no method" : je.text);
	} else if (!(m = method_find(s, json_string_value(json_object_get(req, "method"))))) {
		rc = daxfs_err_set(&err, -EINVAL, "unknown method '%s'",
				   json_string_value(json_object_get(req, "method")));
	} else {
		params = json_object_get(req, "params");
		if (!params)
			params = json_object();
		else
			json_incref(params);
		rc = m->fn(s->ctx, call, params, &result, &err);
		json_decref(params);
	}
	if (rc < 0)
		resp = json_pack("{s:b, s:s, s:i}", "ok", 0, "error",
				 err.msg[0] ? err.msg : strerror(-rc), "errno", -rc);
	else
		resp = json_pack("{s:b, s:o}", "ok", 1, "result",
				 result ? result : json_object());
	send_json(call, resp);
	json_decref(resp);
	json_decref(req);
}

struct conn {
	struct api_server *s;
	int fd;
};

static void conn_track(struct api_server *s, int fd, int remove)
{
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < 256; i++)
		if (s->conns[i] == (remove ? fd : -1)) {
			s->conns[i] = remove ? -1 : fd;
			break;
		}
	pthread_mutex_unlock(&s->lock);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct api_call call = { .fd = c->fd };
	char *buf = NULL;
	size_t len = 0, cap = 0;

	for (;;) {
		char *nl;
		ssize_t n;

		if (cap - len < 4096) {
			char *p = realloc(buf, cap + 65536);

			if (!p || cap > (16u << 20))
				break;
			buf = p;
			cap += 65536;
		}
		n = recv(c->fd, buf + len, cap - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = 0;
		while ((nl = memchr(buf, '\n', len))) {
			*nl = 0;
			if (nl > buf)
				handle(c->s, &call, buf);
			len -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, len);
			buf[len] = 0;
		}
	}
	free(buf);
	conn_track(c->s, c->fd, 1);
	close(c->fd);
	atomic_fetch_sub_explicit(&c->s->active, 1, memory_order_release);
	free(c);
	return NULL;
}

int api_listen(const char *path, const struct api_method *methods, void *ctx,
	       struct api_server **out, struct daxfs_err *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct api_server *s;
	mode_t old;

	if (strlen(path) >= sizeof(sa.sun_path))
		return daxfs_err_set(err, -ENAMETOOLONG, "socket path too long: %s", path);
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->methods = methods;
	s->ctx = ctx;
	pthread_mutex_init(&s->lock, NULL);
	for (int i = 0; i < 256; i++)
		s->conns[i] = -1;
	strcpy(s->path, path);
	strcpy(sa.sun_path, path);
	s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->fd < 0 || pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		free(s);
		return daxfs_err_set(err, -errno, "socket: %s", strerror(errno));
	}
	unlink(path);
	/* Root only: the socket is created 0600. */
	old = umask(0177);
	if (bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s->fd, 64) < 0) {
		int e = errno;

		umask(old);
		close(s->fd);
		close(s->wake[0]);
		close(s->wake[1]);
		free(s);
		return daxfs_err_set(err, -e, "listen on %s: %s", path, strerror(e));
	}
	umask(old);
	chmod(path, 0600);
	*out = s;
	return 0;
}

int api_serve(struct api_server *s)
{
	struct pollfd p[2] = { { s->fd, POLLIN, 0 }, { s->wake[0], POLLIN, 0 } };

	for (;;) {
		struct conn *c;
		pthread_t t;
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (p[1].revents)
			return 0;
		fd = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		c = malloc(sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->s = s;
		c->fd = fd;
		conn_track(s, fd, 0);
		atomic_fetch_add_explicit(&s->active, 1, memory_order_relaxed);
		if (pthread_create(&t, NULL, conn_main, c)) {
			atomic_fetch_sub_explicit(&s->active, 1, memory_order_relaxed);
			close(fd);
			free(c);
			continue;
		}
		pthread_detach(t);
	}
}

void api_stop(struct api_server *s)
{
	if (write(s->wake[1], "x", 1) < 0)
		return;
}

void api_close(struct api_server *s)
{
	if (!s)
		return;
	close(s->fd);
	unlink(s->path);
	/* Idle connections wake up and end; calls in progress end when they
	 * see the daemon stopping. */
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < 256; i++)
		if (s->conns[i] >= 0)
			shutdown(s->conns[i], SHUT_RD);
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < 3000 &&
	     atomic_load_explicit(&s->active, memory_order_acquire) > 0; i++)
		usleep(10000);
	close(s->wake[0]);
	close(s->wake[1]);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
