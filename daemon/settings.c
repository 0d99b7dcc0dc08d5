/* daxfsd configuration.  One table describes every setting once: its
 * flag, its JSON key, its type and where it goes. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "settings.h"

enum opt_type { T_STR, T_U32, T_LIST };

struct setting {
	const char *name;	/* flag without "--" and JSON key */
	enum opt_type type;
	size_t off;		/* into struct settings */
	size_t size;		/* T_STR buffer size */
	size_t count_off;	/* T_LIST: the count field */
	const char *help;
};

#define S(n, f, h) { n, T_STR, offsetof(struct settings, f), sizeof(((struct settings *)0)->f), 0, h }
#define U(n, f, h) { n, T_U32, offsetof(struct settings, f), 0, 0, h }
#define L(n, f, c, h) { n, T_LIST, offsetof(struct settings, f), 0, offsetof(struct settings, c), h }

static const struct setting table[] = {
	S("region", region, "PATH[@OFFSET]  the shared region (required)"),
	S("host-name", host_name, "NAME  label of this host (default: hostname)"),
	S("root", root, "DIR  per-host state (default /var/lib/daxfs)"),
	S("address", address, "SOCKET  control API socket (default /run/daxfs/daxfsd.sock)"),
	S("snapshotter-address", snapshotter_address,
	  "SOCKET  containerd snapshotter gRPC socket (default /run/daxfs/snapshotter.sock)"),
	S("log-level", log_level, "error|warn|info|debug (default info)"),
	S("platform", platform, "OS/ARCH[/VARIANT]  default platform to pull"),
	S("docker-config", docker_config, "FILE  registry credentials (default ~/.docker/config.json)"),
	S("view", view, "managed|external  start and watch daxfs-view, or leave it to its own unit"),
	S("view-mountpoint", view_mountpoint, "DIR  where the view serves (default ROOT/mnt)"),
	S("view-binary", view_binary, "FILE  the daxfs-view program (default: beside daxfsd)"),
	S("containerd-root", containerd_root,
	  "DIR  containerd's root: show the region at DIR/io.containerd.snapshotter.v1.daxfs"),
	L("insecure-registry", insecure, ninsecure, "HOST[:PORT]  allow plain http (repeatable)"),
	L("registry-mirror", mirrors, nmirrors, "DOMAIN=URL  try URL first for DOMAIN (repeatable)"),
	U("pull-concurrency", pull_concurrency, "N  layers fetched in parallel (default 3)"),
	U("lease-ms", lease_ms, "MS  liveness lease (default 10000)"),
	U("grace-ms", grace_ms, "MS  extra wait before a dead host's space is reused"),
	U("connect-timeout-ms", connect_timeout_ms, "MS  registry connect timeout"),
	U("stall-timeout-ms", stall_timeout_ms, "MS  registry transfer stall timeout"),
	U("retries", retries, "N  registry retries"),
	U("backoff-ms", backoff_ms, "MS  first retry delay (doubles)"),
	U("gc-low-watermark", gc_low_watermark,
	  "PCT  evict unheld layers when free data or metadata falls below (default 10)"),
	U("gc-target", gc_target, "PCT  free space an eviction aims for (default 20)"),
	U("view-recheck-ms", view_recheck_ms,
	  "MS  how often the view releases layers no mount uses (default 30000)"),
};
#define NSETTINGS (sizeof(table) / sizeof(table[0]))

void settings_usage(void)
{
	printf("usage: daxfsd [--config FILE] [OPTIONS]\n\noptions (each also a key of the JSON config file):\n");
	for (size_t i = 0; i < NSETTINGS; i++)
		printf("  --%-20s %s\n", table[i].name, table[i].help);
	printf("  --%-20s %s\n", "config", "FILE  JSON config (default /etc/daxfs/config.json)");
}

static int set_value(struct settings *c, const struct setting *s, const char *v,
		     struct daxfs_err *err)
{
	char *base = (char *)c + s->off, *end;
	unsigned long n;
	int *count;

	switch (s->type) {
	case T_STR:
		if (strlen(v) >= s->size)
			return daxfs_err_set(err, -EINVAL, "%s: value too long", s->name);
		strcpy(base, v);
		return 0;
	case T_U32:
		errno = 0;
		n = strtoul(v, &end, 10);
		if (errno || *end || end == v || n > UINT32_MAX)
			return daxfs_err_set(err, -EINVAL, "%s: '%s' is not a number", s->name, v);
		*(uint32_t *)base = (uint32_t)n;
		return 0;
	case T_LIST:
		count = (int *)((char *)c + s->count_off);
		if (*count == SETTINGS_MAX_LIST)
			return daxfs_err_set(err, -EINVAL, "%s: too many values", s->name);
		((char **)base)[*count] = strdup(v);
		if (!((char **)base)[*count])
			return -ENOMEM;
		(*count)++;
		return 0;
	}
	return -EINVAL;
}

static const struct setting *find(const char *name)
{
	for (size_t i = 0; i < NSETTINGS; i++)
		if (!strcmp(table[i].name, name))
			return &table[i];
	return NULL;
}

static int json_value(struct settings *c, const struct setting *s, json_t *v,
		      struct daxfs_err *err)
{
	char num[32];
	size_t i;
	json_t *item;

	if (s->type == T_LIST) {
		if (!json_is_array(v))
			return daxfs_err_set(err, -EINVAL, "config: %s must be a list", s->name);
		json_array_foreach(v, i, item) {
			int rc;

			if (!json_is_string(item))
				return daxfs_err_set(err, -EINVAL, "config: %s entries must be strings",
						     s->name);
			rc = set_value(c, s, json_string_value(item), err);
			if (rc < 0)
				return rc;
		}
		return 0;
	}
	if (s->type == T_U32) {
		if (!json_is_integer(v))
			return daxfs_err_set(err, -EINVAL, "config: %s must be a number", s->name);
		snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
		return set_value(c, s, num, err);
	}
	if (!json_is_string(v))
		return daxfs_err_set(err, -EINVAL, "config: %s must be a string", s->name);
	return set_value(c, s, json_string_value(v), err);
}

static int load_file(struct settings *c, const char *path, int required,
		     struct daxfs_err *err)
{
	json_error_t je;
	const char *key;
	json_t *root, *v;
	int rc = 0;

	if (!required && access(path, F_OK) < 0)
		return 0;
	root = json_load_file(path, 0, &je);
	if (!root)
		return daxfs_err_set(err, -EINVAL, "config %s: %s (line %d)", path, je.text,
				     je.line);
	if (!json_is_object(root)) {
		json_decref(root);
		return daxfs_err_set(err, -EINVAL, "config %s: not a JSON object", path);
	}
	json_object_foreach(root, key, v) {
		const struct setting *s = find(key);

		if (!s) {
			rc = daxfs_err_set(err, -EINVAL, "config %s: unknown key '%s'", path, key);
			break;
		}
		rc = json_value(c, s, v, err);
		if (rc < 0)
			break;
	}
	json_decref(root);
	return rc;
}

static void defaults(struct settings *c)
{
	memset(c, 0, sizeof(*c));
	strcpy(c->root, "/var/lib/daxfs");
	strcpy(c->address, "/run/daxfs/daxfsd.sock");
	strcpy(c->snapshotter_address, SETTINGS_SNAPSHOTTER_ADDRESS);
	strcpy(c->log_level, "info");
	strcpy(c->view, "managed");
	gethostname(c->host_name, sizeof(c->host_name) - 1);
	c->pull_concurrency = 3;
	c->gc_low_watermark = 10;
	c->gc_target = 20;
	c->view_recheck_ms = 30000;
}

int settings_load(int argc, char **argv, struct settings *c, struct daxfs_err *err)
{
	struct option opts[NSETTINGS + 3];
	const char *file = "/etc/daxfs/config.json";
	int required = 0, rc, idx;

	defaults(c);
	for (size_t i = 0; i < NSETTINGS; i++)
		opts[i] = (struct option){ table[i].name, required_argument, 0, 0 };
	opts[NSETTINGS] = (struct option){ "config", required_argument, 0, 'c' };
	opts[NSETTINGS + 1] = (struct option){ "help", no_argument, 0, 'h' };
	opts[NSETTINGS + 2] = (struct option){ 0, 0, 0, 0 };
	/* First pass: only --config, so the file goes under the flags. */
	opterr = 0;
	optind = 1;
	while ((rc = getopt_long(argc, argv, "", opts, &idx)) != -1)
		if (rc == 'c') {
			file = optarg;
			required = 1;
		}
	rc = load_file(c, file, required, err);
	if (rc < 0)
		return rc;
	optind = 1;
	while ((rc = getopt_long(argc, argv, "", opts, &idx)) != -1) {
		if (rc == 'c')
			continue;
		if (rc == 'h')
			return 1;
		if (rc != 0)
			return daxfs_err_set(err, -EINVAL, "unknown or incomplete option '%s'",
					     argv[optind - 1]);
		rc = set_value(c, &table[idx], optarg, err);
		if (rc < 0)
			return rc;
	}
	if (optind < argc)
		return daxfs_err_set(err, -EINVAL, "unexpected argument '%s'", argv[optind]);
	if (!c->region[0])
		return daxfs_err_set(err, -EINVAL, "no region given (--region or \"region\" in the config)");
	if (strcmp(c->view, "managed") && strcmp(c->view, "external"))
		return daxfs_err_set(err, -EINVAL, "view must be \"managed\" or \"external\"");
	if (!c->pull_concurrency || c->pull_concurrency > 32)
		return daxfs_err_set(err, -EINVAL, "pull-concurrency must be 1..32");
	if (c->gc_low_watermark > 100 || c->gc_target > 100)
		return daxfs_err_set(err, -EINVAL, "gc-low-watermark and gc-target are percentages");
	if (c->gc_target < c->gc_low_watermark)
		return daxfs_err_set(err, -EINVAL, "gc-target (%u) must not be below gc-low-watermark (%u)",
				     c->gc_target, c->gc_low_watermark);
	return 0;
}

void settings_free(struct settings *c)
{
	for (int i = 0; i < c->ninsecure; i++)
		free(c->insecure[i]);
	for (int i = 0; i < c->nmirrors; i++)
		free(c->mirrors[i]);
	c->ninsecure = c->nmirrors = 0;
}
