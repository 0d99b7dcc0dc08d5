/* daxfsctl pull, pin, unpin, images, layers, rm, gc, df, hosts: requests
 * to daxfsd. */
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
	int pin;		/* pull --pin */
	int dry_run;		/* gc --dry-run */
	int optind;
};

/* --address, --json (and --platform, --pin for pull, --dry-run for gc);
 * the rest is positional. */
static int parse_common(int argc, char **argv, const char *cmd, struct common *c)
{
	static const struct option opts[] = {
		{ "address", required_argument, 0, 'a' },
		{ "json", no_argument, 0, 'j' },
		{ "platform", required_argument, 0, 'p' },
		{ "pin", no_argument, 0, 'P' },
		{ "dry-run", no_argument, 0, 'n' },
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
		else if (o == 'P' && !strcmp(cmd, "pull"))
			c->pin = 1;
		else if (o == 'n' && !strcmp(cmd, "gc"))
			c->dry_run = 1;
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
	params = json_pack("{s:s, s:s?, s:b}", "ref", argv[c.optind], "platform", c.platform,
			   "pin", c.pin);
	rc = client_call(c.address, "pull", params, on_layer, &p, &r);
	json_decref(params);
	if (rc < 0)
		return 1;
	if (c.json) {
		print_json(r);
	} else {
		human(jnum(r, "downloaded_bytes"), d, sizeof(d));
		printf("pulled %s (%s): %zu layers, %s downloaded in %.2f s%s\n", jstr(r, "ref"),
		       jstr(r, "manifest"), json_array_size(json_object_get(r, "layers")), d,
		       (double)jnum(r, "ms") / 1000.0,
		       json_is_true(json_object_get(r, "pinned")) ? "; pinned" : "");
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
		printf("%-50s %-20s %-9s %s\n", "REFERENCE", "MANIFEST", "LAYERS", "PINNED");
		json_array_foreach(json_object_get(r, "images"), i, im) {
			char n[32];

			snprintf(n, sizeof(n), "%" PRIu64 "/%" PRIu64, jnum(im, "layers_present"),
				 jnum(im, "layers"));
			printf("%-50s %-20.19s %-9s %s\n", jstr(im, "ref"), jstr(im, "manifest"), n,
			       json_is_true(json_object_get(im, "pinned")) ? "yes" : "no");
		}
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

static int cmd_pin_either(int argc, char **argv, const char *cmd)
{
	struct common c;
	json_t *r = NULL;
	int rc = simple(argc, argv, cmd, 1, json_object(), &r, &c);

	if (rc)
		return rc;
	if (c.json)
		print_json(r);
	else
		printf("%s %s\n", json_is_true(json_object_get(r, "pinned")) ? "pinned" : "unpinned",
		       jstr(r, "ref"));
	json_decref(r);
	return 0;
}

static int cmd_pin(int argc, char **argv)
{
	return cmd_pin_either(argc, argv, "pin");
}

static int cmd_unpin(int argc, char **argv)
{
	return cmd_pin_either(argc, argv, "unpin");
}

static int cmd_gc(int argc, char **argv)
{
	struct common c;
	json_t *params, *r = NULL, *l;
	char a[32], b[32];
	size_t i;
	int rc = parse_common(argc, argv, "gc", &c);

	if (rc)
		return rc;
	if (argc != c.optind)
		return cli_usage(cli_find("gc"), 2);
	params = json_pack("{s:b}", "dry_run", c.dry_run);
	rc = client_call(c.address, "gc", params, NULL, NULL, &r);
	json_decref(params);
	if (rc < 0)
		return 1;
	if (c.json) {
		print_json(r);
		json_decref(r);
		return 0;
	}
	json_array_foreach(json_object_get(r, "layers"), i, l) {
		human(jnum(l, "unpacked_bytes"), a, sizeof(a));
		printf("%s %.19s (l/%s, %s unpacked)\n", c.dry_run ? "evictable" : "evicted",
		       jstr(l, "diff_id"), jstr(l, "short_id"), a);
	}
	human(jnum(r, "data_freed"), a, sizeof(a));
	human(jnum(r, "meta_freed"), b, sizeof(b));
	if (c.dry_run)
		printf("%zu layers evictable; nothing changed\n",
		       json_array_size(json_object_get(r, "layers")));
	else
		printf("%" PRIu64 " layers evicted: %s data, %s metadata freed\n",
		       jnum(r, "evicted"), a, b);
	printf("kept: %" PRIu64 " held by hosts, %" PRIu64 " pinned\n", jnum(r, "held"),
	       jnum(r, "pinned"));
	json_decref(r);
	return 0;
}

static int cmd_df(int argc, char **argv)
{
	struct common c;
	json_t *r = NULL;
	char a[32], b[32], m1[32], m2[32], cb[32], sv[32], hb[32], rb[32];
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
	human(jnum(r, "held_bytes"), hb, sizeof(hb));
	human(jnum(r, "reclaimable_bytes"), rb, sizeof(rb));
	printf("data:     %s used of %s\nmetadata: %s used of %s\n", a, b, m1, m2);
	printf("layers:   %" PRIu64 " ready: %" PRIu64 " held, %" PRIu64 " pinned (%s unpacked "
	       "kept); %s unpacked reclaimable\n", jnum(r, "layers_ready"),
	       jnum(r, "layers_held"), jnum(r, "layers_pinned"), hb, rb);
	printf("contents: %" PRIu64 " distinct, %s\n", jnum(r, "contents"), cb);
	printf("saved by sharing and dedup: %s\n", sv);
	json_decref(r);
	return 0;
}

static int cmd_stats(int argc, char **argv)
{
	struct common c;
	json_t *r = NULL;
	int rc = simple(argc, argv, "stats", 0, json_object(), &r, &c);

	if (rc)
		return rc;
	if (c.json) {
		print_json(r);
	} else {
		printf("CRI-labelled pulls into the region: %" PRIu64 "\n", jnum(r, "cri_pulls"));
		printf("CRI fallbacks to containerd's download: %" PRIu64 "\n",
		       jnum(r, "cri_fallbacks"));
		printf("failed imports of unpacked snapshots: %" PRIu64 "\n",
		       jnum(r, "import_failures"));
	}
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
		printf("%-4s %-20s %-5s %-9s %-14s %-6s %-36s %s\n", "SLOT", "NAME", "INC",
		       "LIVENESS", "HEARTBEAT", "HELD", "UUID", "VERSION");
		json_array_foreach(json_object_get(r, "hosts"), i, h) {
			char seen[32];

			snprintf(seen, sizeof(seen), "%" PRIu64 " ms ago",
				 jnum(h, "heartbeat_age_ms"));
			printf("%-4" PRIu64 " %-20s %-5" PRIu64 " %-9s %-14s %-6" PRIu64
			       " %-36s %s%s\n", jnum(h, "slot"), jstr(h, "name"),
			       jnum(h, "incarnation"), jstr(h, "liveness"), seen,
			       jnum(h, "layers_held"), jstr(h, "uuid"), jstr(h, "version"),
			       json_is_true(json_object_get(h, "self")) ? " (this host)" : "");
		}
	}
	json_decref(r);
	return 0;
}

const struct cli_cmd daemon_cmds[] = {
	{ "pull", "[--address SOCK] [--platform OS/ARCH[/VARIANT]] [--pin] [--json] IMAGE",
	  "Pull IMAGE into the region through this host's daxfsd.  Layers already\n"
	  "in the region, or being unpacked by another host, are not downloaded.\n"
	  "With --pin the image's layers are kept against eviction (see unpin).", cmd_pull },
	{ "pin", "[--address SOCK] [--json] IMAGE",
	  "Keep the layers of IMAGE (already pulled) against eviction.", cmd_pin },
	{ "unpin", "[--address SOCK] [--json] IMAGE",
	  "Let the layers of IMAGE be evicted again once no host holds them.", cmd_unpin },
	{ "images", "[--address SOCK] [--json]",
	  "List the images recorded in the region: pinned, and how many of their\n"
	  "layers are present (an evicted layer is pulled again by the next pull).",
	  cmd_images },
	{ "layers", "[--address SOCK] [--json]",
	  "List the region's layers: digests, sizes, files, state, holders.", cmd_layers },
	{ "rm", "[--address SOCK] [--json] IMAGE", "Remove an image record from the region.",
	  cmd_rm },
	{ "gc", "[--address SOCK] [--dry-run] [--json]",
	  "Evict every layer no host holds and no pinned image needs, and print\n"
	  "each with the bytes freed; --dry-run lists them and changes nothing.", cmd_gc },
	{ "df", "[--address SOCK] [--json]",
	  "Region capacity and use (data and metadata), layers held, pinned and\n"
	  "reclaimable, and the bytes saved by sharing and dedup.", cmd_df },
	{ "stats", "[--address SOCK] [--json]",
	  "Counters of the containerd snapshotter since daxfsd started: CRI-labelled\n"
	  "pulls into the region, fallbacks to containerd's own download (each also\n"
	  "logged with its reason), and failed imports of unpacked layers.", cmd_stats },
	{ "hosts", "[--address SOCK] [--json]",
	  "Hosts attached to the region: incarnation, liveness, how long ago this\n"
	  "host saw each one's heartbeat move, and how many layers each holds.", cmd_hosts },
	{ 0, 0, 0, 0 },
};
