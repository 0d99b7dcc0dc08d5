/* daxfsctl pull, images, layers, rm, df, hosts: requests to daxfsd. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "client.h"

struct common {
	const char *address;
	int json;
	const char *platform;
	int optind;
};

/* --address, --json (and --platform for pull); the rest is positional. */
static int parse_common(int argc, char **argv, const char *cmd, struct common *c)
{
	static const struct option opts[] = {
		{ "address", required_argument, 0, 'a' },
		{ "json", no_argument, 0, 'j' },
		{ "platform", required_argument, 0, 'p' },
		{ 0, 0, 0, 0 },
	};
	int o;

	memset(c, 0, sizeof(*c));
	optind = 1;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o == 'a')
			c->address = optarg;
		else if (o == 'j')
			c->json = 1;
		else if (o == 'p' && !strcmp(cmd, "pull"))
			c->platform = optarg;
		else
			return cli_usage(cli_find(cmd), 2);
	}
	c->address = client_address(c->address);
	c->optind = optind;
	return 0;
}

static void human(uint64_t v, char *buf, size_t n)
{
	const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double d = (double)v;
	int i = 0;

	while (d >= 1024 && i < 4) {
		d /= 1024;
		i++;
	}
	snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", d, u[i]);
}

static uint64_t jnum(json_t *o, const char *k)
{
	return (uint64_t)json_integer_value(json_object_get(o, k));
}

static const char *jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

static void print_json(json_t *r)
{
	char *s = json_dumps(r, JSON_INDENT(2));

	puts(s ? s : "null");
	free(s);
}

/* ---- pull ---- */

struct progress {
	int tty;
	int json;
};

static void on_layer(json_t *ev, void *arg)
{
	struct progress *p = arg;
	const char *st = jstr(ev, "status"), *dg = jstr(ev, "digest");
	char b[32], t[32];

	if (p->json)
		return;
	human(jnum(ev, "bytes"), b, sizeof(b));
	human(jnum(ev, "total"), t, sizeof(t));
	if (!strcmp(st, "downloading") && p->tty) {
		uint64_t tot = jnum(ev, "total"), done = jnum(ev, "bytes");
		int w = tot ? (int)(30 * done / tot) : 0;

		fprintf(stderr, "\r%.19s [%-30.*s] %s / %s   ", dg, w > 30 ? 30 : w,
			"##############################", b, t);
		return;
	}
	if (!strcmp(st, "downloading"))
		return;	/* plain output: only state changes */
	if (p->tty)
		fprintf(stderr, "\r%*s\r", 79, "");
	if (!strcmp(st, "waiting"))
		printf("%.19s waiting for host %s (%s done)\n", dg, jstr(ev, "detail"), b);
	else if (!strcmp(st, "failed"))
		printf("%.19s failed: %s\n", dg, jstr(ev, "detail"));
	else
		printf("%.19s %s (%s)\n", dg, st, t);
	fflush(stdout);
}

static int cmd_pull(int argc, char **argv)
{
	struct common c;
	struct progress p = { .tty = isatty(STDERR_FILENO) };
	json_t *params, *r = NULL;
	char d[32];
	int rc;

	if ((rc = parse_common(argc, argv, "pull", &c)))
		return rc;
	if (c.optind != argc - 1)
		return cli_usage(cli_find("pull"), 2);
	p.json = c.json;
	params = json_pack("{s:s, s:s?}", "ref", argv[c.optind], "platform", c.platform);
	rc = client_call(c.address, "pull", params, on_layer, &p, &r);
	json_decref(params);
	if (rc < 0)
		return 1;
	if (c.json) {
		print_json(r);
	} else {
		human(jnum(r, "downloaded_bytes"), d, sizeof(d));
		printf("pulled %s (%s): %zu layers, %s downloaded in %.2f s\n", jstr(r, "ref"),
		       jstr(r, "manifest"), json_array_size(json_object_get(r, "layers")), d,
		       (double)jnum(r, "ms") / 1000.0);
	}
	json_decref(r);
	return 0;
}

/* ---- listings ---- */

static int simple(int argc, char **argv, const char *cmd, int want_args,
		  json_t *params, json_t **r, struct common *c)
{
	int rc = parse_common(argc, argv, cmd, c);

	if (rc)
		return rc;
	if (argc - c->optind != want_args)
		return cli_usage(cli_find(cmd), 2);
	if (want_args)
		json_object_set_new(params, "ref", json_string(argv[c->optind]));
	rc = client_call(c->address, cmd, params, NULL, NULL, r);
	json_decref(params);
	return rc < 0 ? 1 : 0;
}

static int cmd_images(int argc, char **argv)
{
	struct common c;
	json_t *r = NULL, *im;
	size_t i;
	int rc = simple(argc, argv, "images", 0, json_object(), &r, &c);

	if (rc)
		return rc;
	if (c.json) {
		print_json(r);
	} else {
		printf("%-50s %-20s %s\n", "REFERENCE", "MANIFEST", "LAYERS");
		json_array_foreach(json_object_get(r, "images"), i, im)
			printf("%-50s %.19s %" PRIu64 "\n", jstr(im, "ref"), jstr(im, "manifest"),
			       jnum(im, "layers"));
	}
	json_decref(r);
	return 0;
}

static int cmd_layers(int argc, char **argv)
{
	struct common c;
	json_t *r = NULL, *l;
	size_t i;
	int rc = simple(argc, argv, "layers", 0, json_object(), &r, &c);

	if (rc)
		return rc;
	if (c.json) {
		print_json(r);
	} else {
		printf("%-20s %-20s %10s %10s %7s %-10s %s\n", "DIFF_ID", "DIGEST", "COMPRESSED",
		       "UNPACKED", "FILES", "STATE", "HOLDERS");
		json_array_foreach(json_object_get(r, "layers"), i, l) {
			char a[32], b[32];

			human(jnum(l, "compressed_bytes"), a, sizeof(a));
			human(jnum(l, "unpacked_bytes"), b, sizeof(b));
			printf("%.19s  %-19.19s %10s %10s %7" PRIu64 " %-10s %" PRIu64 "\n",
			       jstr(l, "diff_id"), *jstr(l, "digest") ? jstr(l, "digest") : "-",
			       a, b, jnum(l, "files"), jstr(l, "state"), jnum(l, "holders"));
		}
	}
	json_decref(r);
	return 0;
}

static int cmd_rm(int argc, char **argv)
{
	struct common c;
	json_t *r = NULL;
	int rc = simple(argc, argv, "rm", 1, json_object(), &r, &c);

	if (rc)
		return rc;
	if (c.json)
		print_json(r);
	else
		printf("removed %s\n", jstr(r, "removed"));
	json_decref(r);
	return 0;
}

static int cmd_df(int argc, char **argv)
{
	struct common c;
	json_t *r = NULL;
	char a[32], b[32], m1[32], m2[32], cb[32], sv[32];
	int rc = simple(argc, argv, "df", 0, json_object(), &r, &c);

	if (rc)
		return rc;
	if (c.json) {
		print_json(r);
		json_decref(r);
		return 0;
	}
	human(jnum(r, "data_used"), a, sizeof(a));
	human(jnum(r, "data_bytes"), b, sizeof(b));
	human(jnum(r, "meta_used"), m1, sizeof(m1));
	human(jnum(r, "meta_bytes"), m2, sizeof(m2));
	human(jnum(r, "content_bytes"), cb, sizeof(cb));
	human(jnum(r, "saved_bytes"), sv, sizeof(sv));
	printf("data:     %s used of %s\nmetadata: %s used of %s\n", a, b, m1, m2);
	printf("contents: %" PRIu64 " distinct, %s; %" PRIu64 " layers ready\n",
	       jnum(r, "contents"), cb, jnum(r, "layers_ready"));
	printf("saved by sharing and dedup: %s\n", sv);
	json_decref(r);
	return 0;
}

static int cmd_hosts(int argc, char **argv)
{
	struct common c;
	json_t *r = NULL, *h;
	size_t i;
	int rc = simple(argc, argv, "hosts", 0, json_object(), &r, &c);

	if (rc)
		return rc;
	if (c.json) {
		print_json(r);
	} else {
		printf("%-4s %-20s %-36s %-5s %-9s %s\n", "SLOT", "NAME", "UUID", "INC",
		       "LIVENESS", "VERSION");
		json_array_foreach(json_object_get(r, "hosts"), i, h)
			printf("%-4" PRIu64 " %-20s %-36s %-5" PRIu64 " %-9s %s%s\n",
			       jnum(h, "slot"), jstr(h, "name"), jstr(h, "uuid"),
			       jnum(h, "incarnation"), jstr(h, "liveness"), jstr(h, "version"),
			       json_is_true(json_object_get(h, "self")) ? " (this host)" : "");
	}
	json_decref(r);
	return 0;
}

const struct cli_cmd daemon_cmds[] = {
	{ "pull", "[--address SOCK] [--platform OS/ARCH[/VARIANT]] [--json] IMAGE",
	  "Pull IMAGE into the region through this host's daxfsd.  Layers already\n"
	  "in the region, or being unpacked by another host, are not downloaded.", cmd_pull },
	{ "images", "[--address SOCK] [--json]", "List the images recorded in the region.",
	  cmd_images },
	{ "layers", "[--address SOCK] [--json]",
	  "List the region's layers: digests, sizes, files, state, holders.", cmd_layers },
	{ "rm", "[--address SOCK] [--json] IMAGE", "Remove an image record from the region.",
	  cmd_rm },
	{ "df", "[--address SOCK] [--json]",
	  "Region capacity and use, and the bytes saved by sharing and dedup.", cmd_df },
	{ "hosts", "[--address SOCK] [--json]", "Hosts attached to the region and their liveness.",
	  cmd_hosts },
	{ 0, 0, 0, 0 },
};
