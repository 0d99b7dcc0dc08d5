/* daxfsctl mkfs, info, fsck: commands that work on a region directly. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "daxfs.h"

static void fmt_bytes(uint64_t v, char *buf, size_t n)
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

static void fmt_uuid(const uint8_t *u, char out[37])
{
	snprintf(out, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10],
		 u[11], u[12], u[13], u[14], u[15]);
}

static int list_devices(void)
{
	struct daxfs_device d[64];
	int n = daxfs_list_devices(d, 64);

	if (n < 0) {
		cli_error("listing device-dax devices: %s", strerror(-n));
		return 1;
	}
	if (n == 0) {
		printf("no device-dax devices found\n");
		return 0;
	}
	printf("%-16s %-12s %-10s %s\n", "DEVICE", "SIZE", "ALIGN", "REGION");
	for (int i = 0; i < n && i < 64; i++) {
		char sz[32], al[32];

		fmt_bytes(d[i].size, sz, sizeof(sz));
		fmt_bytes(d[i].align, al, sizeof(al));
		printf("%-16s %-12s %-10s %s\n", d[i].path, sz, al, d[i].region);
	}
	return 0;
}

static int cmd_mkfs(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, 0, 's' },
		{ "max-hosts", required_argument, 0, 'H' },
		{ "journal-entries", required_argument, 0, 'j' },
		{ "hash-slots", required_argument, 0, 'x' },
		{ "meta-percent", required_argument, 0, 'm' },
		{ "list-devices", no_argument, 0, 'l' },
		{ 0, 0, 0, 0 },
	};
	struct daxfs_mkfs_opts o = { 0 };
	struct daxfs_err err = { 0 };
	char path[4096];
	uint64_t v;
	int c;

	while ((c = getopt_long(argc, argv, "s:", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			return list_devices();
		case 's': case 'H': case 'j': case 'x': case 'm':
			if (daxfs_parse_size(optarg, &v) < 0) {
				cli_error("mkfs: bad number '%s'", optarg);
				return 2;
			}
			if (c == 's')
				o.size = v;
			else if (c == 'H')
				o.max_hosts = (uint32_t)v;
			else if (c == 'j')
				o.journal_entries = (uint32_t)v;
			else if (c == 'x')
				o.hash_slots = v;
			else
				o.meta_percent = (uint32_t)v;
			break;
		default:
			return cli_usage(cli_find("mkfs"), 2);
		}
	}
	if (optind != argc - 1)
		return cli_usage(cli_find("mkfs"), 2);
	if (daxfs_parse_region(argv[optind], path, sizeof(path), &o.offset, &err) < 0 ||
	    (o.path = path, daxfs_mkfs(&o, &err)) < 0) {
		cli_error("mkfs: %s", err.msg);
		return 1;
	}
	printf("made DaxFS region %s\n", argv[optind]);
	return 0;
}

static int open_region(const char *spec, int readonly, struct daxfs **fs)
{
	struct daxfs_open_opts o = { 0 };
	struct daxfs_err err = { 0 };
	char path[4096];

	if (daxfs_parse_region(spec, path, sizeof(path), &o.offset, &err) < 0) {
		cli_error("%s", err.msg);
		return -1;
	}
	o.path = path;
	o.readonly = readonly;
	if (daxfs_open(&o, fs, &err) < 0) {
		cli_error("%s", err.msg);
		return -1;
	}
	return 0;
}

static const char *liveness_name(enum daxfs_liveness l)
{
	switch (l) {
	case DAXFS_HOST_ALIVE: return "alive";
	case DAXFS_HOST_SUSPECT: return "attached (heartbeat not seen moving)";
	case DAXFS_HOST_DEAD: return "dead";
	case DAXFS_HOST_REAPING: return "being reaped";
	case DAXFS_HOST_GONE: return "detached";
	default: return "unused";
	}
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void print_hosts(struct daxfs *fs, unsigned sample_ms)
{
	struct daxfs_host_info h[64];
	int n = daxfs_hosts_observe(fs, h, 64);

	if (n > 0 && sample_ms) {
		/* Liveness is whether a heartbeat moves while we watch. */
		sleep_ms(sample_ms);
		n = daxfs_hosts_observe(fs, h, 64);
	}
	printf("hosts:\n");
	if (n <= 0)
		printf("  (none attached yet)\n");
	for (int i = 0; i < n && i < 64; i++) {
		char u[37];

		fmt_uuid(h[i].uuid, u);
		printf("  slot %-2d %-16s %s  incarnation %u  %s, %d process%s, version %s\n",
		       h[i].slot, h[i].name[0] ? h[i].name : "-", u, h[i].incarnation,
		       liveness_name(h[i].liveness), h[i].nprocs,
		       h[i].nprocs == 1 ? "" : "es", h[i].version[0] ? h[i].version : "-");
	}
}

static int cmd_info(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "sample-ms", required_argument, 0, 's' },
		{ 0, 0, 0, 0 },
	};
	struct daxfs *fs;
	struct daxfs_usage u;
	char a[32], b[32], c2[32], d[32], uu[37];
	unsigned sample = 500;
	uint64_t saved;
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c != 's')
			return cli_usage(cli_find("info"), 2);
		sample = (unsigned)strtoul(optarg, NULL, 10);
	}
	if (optind != argc - 1)
		return cli_usage(cli_find("info"), 2);
	if (open_region(argv[optind], 1, &fs) < 0)
		return 1;
	daxfs_usage(fs, &u);
	fmt_uuid(u.uuid, uu);
	printf("region:    %s\nuuid:      %s\nformat:    version %u\n", argv[optind], uu,
	       u.version);
	fmt_bytes(u.region_size, a, sizeof(a));
	printf("size:      %s\n", a);
	fmt_bytes(u.data_used, a, sizeof(a));
	fmt_bytes(u.data_total, b, sizeof(b));
	printf("data:      %s used of %s (%.1f%%)\n", a, b,
	       u.data_total ? 100.0 * (double)u.data_used / (double)u.data_total : 0.0);
	fmt_bytes(u.meta_used, c2, sizeof(c2));
	fmt_bytes(u.meta_total, d, sizeof(d));
	printf("metadata:  %s used of %s; index %" PRIu64 " of %" PRIu64 " slots\n",
	       c2, d, u.hash_used, u.hash_slots);
	saved = u.referenced_bytes > u.content_bytes ? u.referenced_bytes - u.content_bytes : 0;
	fmt_bytes(u.content_bytes, a, sizeof(a));
	fmt_bytes(saved, b, sizeof(b));
	printf("contents:  %" PRIu64 " distinct (%s); %" PRIu64 " layers ready; "
	       "sharing saves %s\n", u.contents, a, u.layers_ready, b);
	printf("max hosts: %u\n", u.max_hosts);
	print_hosts(fs, sample);
	daxfs_close(fs);
	return 0;
}

static void fsck_line(const char *line, void *arg)
{
	(void)arg;
	printf("problem: %s\n", line);
}

static int cmd_fsck(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "live", no_argument, 0, 'l' },
		{ "offline", no_argument, 0, 'o' },
		{ 0, 0, 0, 0 },
	};
	int live = -1, c, n;
	struct daxfs *fs;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'l')
			live = 1;
		else if (c == 'o')
			live = 0;
		else
			return cli_usage(cli_find("fsck"), 2);
	}
	if (optind != argc - 1)
		return cli_usage(cli_find("fsck"), 2);
	if (open_region(argv[optind], 1, &fs) < 0)
		return 1;
	if (live < 0) {
		/* Live whenever some host is attached or not yet reaped. */
		struct daxfs_host_info h[64];
		int nh = daxfs_hosts_observe(fs, h, 64);

		live = 0;
		for (int i = 0; i < nh && i < 64; i++)
			if (h[i].liveness != DAXFS_HOST_GONE)
				live = 1;
	}
	n = daxfs_fsck(fs, live, fsck_line, NULL);
	daxfs_close(fs);
	if (n < 0) {
		cli_error("fsck: %s", strerror(-n));
		return 1;
	}
	if (n) {
		printf("%s: %d problem%s found\n", argv[optind], n, n == 1 ? "" : "s");
		return 1;
	}
	printf("%s: clean (%s check)\n", argv[optind], live ? "live" : "offline");
	return 0;
}

const struct cli_cmd region_cmds[] = {
	{ "mkfs", "[--size SIZE] [--max-hosts N] [--journal-entries N] REGION | --list-devices",
	  "Make a DaxFS region.  REGION is FILE or FILE@OFFSET (a file under /dev/shm,\n"
	  "any regular file, or a device-dax device /dev/daxX.Y).  A file is grown\n"
	  "with posix_fallocate to OFFSET+SIZE.  --list-devices lists device-dax\n"
	  "devices with their size and alignment.", cmd_mkfs },
	{ "info", "[--sample-ms MS] REGION",
	  "Show the superblock, capacity and use, sharing savings and the hosts\n"
	  "attached, with their liveness: a host is alive if its heartbeat moves\n"
	  "while info watches for MS milliseconds (default 500).", cmd_info },
	{ "fsck", "[--live | --offline] REGION",
	  "Check a region.  Lists every problem and exits 1 if there is any.\n"
	  "A live check (the default while hosts are attached) treats the\n"
	  "unfinished work of hosts not yet reaped as in flight.", cmd_fsck },
	{ 0, 0, 0, 0 },
};
