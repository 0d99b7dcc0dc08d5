/* daxfsctl: talking to daxfsd over its unix socket (JSON lines). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "client.h"

const char *client_address(const char *flag)
{
	const char *env = getenv("DAXFS_ADDRESS");

	if (flag)
		return flag;
	return env && *env ? env : "/run/daxfs/daxfsd.sock";
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		cli_error("socket path too long: %s", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		cli_error("cannot reach daxfsd at %s: %s (is it running? see --address)",
			  path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

int client_call(const char *address, const char *method, json_t *params,
		void (*on_event)(json_t *ev, void *arg), void *arg, json_t **result)
{
	json_t *req = json_pack("{s:s, s:O}", "method", method, "params",
				params ? params : json_object());
	char *line = json_dumps(req, JSON_COMPACT);
	FILE *in = NULL;
	char *buf = NULL;
	size_t cap = 0;
	int fd, rc = -1;

	json_decref(req);
	fd = connect_to(address);
	if (fd < 0 || !line)
		goto out;
	if (dprintf(fd, "%s\n", line) < 0) {
		cli_error("sending to daxfsd: %s", strerror(errno));
		goto out;
	}
	in = fdopen(fd, "r");
	if (!in)
		goto out;
	fd = -1;
	while (getline(&buf, &cap, in) > 0) {
		json_t *j = json_loads(buf, 0, NULL);

		if (!j)
			continue;
		if (json_object_get(j, "event")) {
			if (on_event)
				on_event(j, arg);
			json_decref(j);
			continue;
		}
		if (json_is_true(json_object_get(j, "ok"))) {
			*result = json_incref(json_object_get(j, "result"));
			rc = 0;
		} else {
			cli_error("%s", json_string_value(json_object_get(j, "error")) ?
				  json_string_value(json_object_get(j, "error")) : "request failed");
		}
		json_decref(j);
		goto out;
	}
	cli_error("daxfsd closed the connection before answering");
out:
	free(buf);
	free(line);
	if (in)
		fclose(in);
	if (fd >= 0)
		close(fd);
	return rc;
}
