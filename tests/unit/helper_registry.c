/* helper_registry [OPTIONS] CMD DOMAIN PATH ARGS...
 *
 * Drives the registry client for tests/sh/registry.sh (which runs a real
 * registry and tests/py/regfault.py in front of it).  Commands:
 *   manifest DOMAIN PATH REFERENCE     ok bytes=N type=T sha256=HEX
 *   getblob DOMAIN PATH DIGEST MAX     ok bytes=N sha256=HEX
 *   blob DOMAIN PATH DIGEST SIZE       ok bytes=N ms=T (sha256 checked here)
 *   partial DOMAIN PATH DIGEST SIZE N  read N bytes, close early: ok bytes=N
 *   parallel DOMAIN PATH DIGEST:SIZE...  one thread per blob; ok all
 * Options: -r retries, -b backoff ms, -s stall ms, -c connect ms,
 *   -C docker config, -i insecure host (repeatable), -m mirror
 *   (repeatable), -n times to repeat the command with one registry,
 *   -k read size, -d microseconds to sleep between reads.
 * Failures print "error: ENAME: message" and exit 1. */
#include <errno.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "registry.h"

#define MAX_LIST 8
#define MAX_PAR 16

static struct registry *reg;
static struct image_ref ref;
static size_t chunk = 7001;
static useconds_t delay_us;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int unhex_digest(const char *s, uint8_t out[32])
{
	if (strncmp(s, "sha256:", 7) || strlen(s) != 71)
		return -1;
	for (int i = 0; i < 32; i++)
		if (sscanf(s + 7 + 2 * i, "%2hhx", &out[i]) != 1)
			return -1;
	return 0;
}

static void hex(const uint8_t *d, char out[65])
{
	for (int i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static int report_error(const char *what, const struct daxfs_err *err)
{
	const char *name = strerrorname_np(err->code);

	pthread_mutex_lock(&out_lock);
	printf("error: %s%s%s: %s\n", what, what[0] ? " " : "",
	       name ? name : "E?", err->msg);
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
	return 1;
}

static int cmd_manifest(char **argv)
{
	struct daxfs_err err = { 0 };
	char *body, *type, h[65];
	uint8_t md[32];
	size_t len;

	if (registry_get_manifest(reg, &ref, argv[0], &body, &len, &type, &err) < 0)
		return report_error("", &err);
	EVP_Digest(body, len, md, NULL, EVP_sha256(), NULL);
	hex(md, h);
	printf("ok bytes=%zu type=%s sha256=%s\n", len, type ? type : "-", h);
	free(body);
	free(type);
	return 0;
}

static int cmd_getblob(char **argv)
{
	struct daxfs_err err = { 0 };
	uint8_t d[32], md[32];
	char *body, h[65];
	size_t len;

	if (unhex_digest(argv[0], d) < 0)
		return 2;
	if (registry_get_blob(reg, &ref, d, strtoull(argv[1], NULL, 0), &body, &len,
			      &err) < 0)
		return report_error("", &err);
	EVP_Digest(body, len, md, NULL, EVP_sha256(), NULL);
	hex(md, h);
	printf("ok bytes=%zu sha256=%s\n", len, h);
	free(body);
	return 0;
}

struct pull {
	const char *digest;
	uint64_t size;
	uint64_t stop_after;	/* UINT64_MAX: read to the end */
	int rc;
};

/* Stream one blob, hashing it; 0 when it is complete and intact. */
static int pull_blob(struct pull *p)
{
	struct daxfs_err err = { 0 };
	struct registry_blob *b;
	uint64_t total = 0, t0 = ms_now();
	uint8_t d[32], md[32];
	EVP_MD_CTX *ctx;
	char *buf;
	ssize_t n = 0;

	if (unhex_digest(p->digest, d) < 0)
		return 2;
	if (registry_blob_open(reg, &ref, d, p->size, &b, &err) < 0)
		return report_error(p->digest, &err);
	buf = malloc(chunk);
	ctx = EVP_MD_CTX_new();
	if (!buf || !ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
		abort();
	while (total < p->stop_after) {
		n = registry_blob_read(b, buf, chunk, &err);
		if (n <= 0)
			break;
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		total += (uint64_t)n;
		if (delay_us)
			usleep(delay_us);
	}
	EVP_DigestFinal_ex(ctx, md, NULL);
	EVP_MD_CTX_free(ctx);
	free(buf);
	registry_blob_close(b);
	if (n < 0)
		return report_error(p->digest, &err);
	pthread_mutex_lock(&out_lock);
	if (p->stop_after == UINT64_MAX && (total != p->size || memcmp(md, d, 32))) {
		printf("error: %s EBADMSG: helper: got %llu bytes, digest %s\n", p->digest,
		       (unsigned long long)total, memcmp(md, d, 32) ? "differs" : "ok");
		n = -1;
	} else {
		printf("ok bytes=%llu ms=%llu\n", (unsigned long long)total,
		       (unsigned long long)(ms_now() - t0));
	}
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
	return n < 0 ? 1 : 0;
}

static int cmd_blob(char **argv, bool partial)
{
	struct pull p = { argv[0], strtoull(argv[1], NULL, 0), UINT64_MAX, 0 };

	if (partial)
		p.stop_after = strtoull(argv[2], NULL, 0);
	return pull_blob(&p);
}

static void *pull_thread(void *arg)
{
	struct pull *p = arg;

	p->rc = pull_blob(p);
	return NULL;
}

static int cmd_parallel(int argc, char **argv)
{
	struct pull p[MAX_PAR];
	pthread_t t[MAX_PAR];
	int n = argc < MAX_PAR ? argc : MAX_PAR, bad = 0;

	for (int i = 0; i < n; i++) {
		char *colon = strrchr(argv[i], ':');

		if (!colon)
			return 2;
		*colon = 0;
		p[i] = (struct pull){ argv[i], strtoull(colon + 1, NULL, 0), UINT64_MAX, 0 };
		if (pthread_create(&t[i], NULL, pull_thread, &p[i]))
			abort();
	}
	for (int i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		bad |= p[i].rc;
	}
	if (!bad)
		printf("ok all\n");
	return bad ? 1 : 0;
}

static int run(const char *cmd, int argc, char **argv)
{
	if (!strcmp(cmd, "manifest") && argc == 1)
		return cmd_manifest(argv);
	if (!strcmp(cmd, "getblob") && argc == 2)
		return cmd_getblob(argv);
	if (!strcmp(cmd, "blob") && argc == 2)
		return cmd_blob(argv, false);
	if (!strcmp(cmd, "partial") && argc == 3)
		return cmd_blob(argv, true);
	if (!strcmp(cmd, "parallel") && argc >= 1)
		return cmd_parallel(argc, argv);
	return 2;
}

static int usage(void)
{
	fprintf(stderr, "usage: helper_registry [-r N] [-b MS] [-s MS] [-c MS] [-C FILE]\n"
		"	[-i HOST]... [-m DOMAIN=URL]... [-n N] [-k BYTES] [-d US]\n"
		"	manifest|getblob|blob|partial|parallel DOMAIN PATH ARGS...\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *insecure[MAX_LIST], *mirrors[MAX_LIST];
	struct registry_opts o = { .insecure = insecure, .mirrors = mirrors };
	struct daxfs_err err = { 0 };
	int c, repeat = 1, rc = 0;

	/* A peer closing mid-write must be an error, not the end. */
	signal(SIGPIPE, SIG_IGN);
	while ((c = getopt(argc, argv, "+r:b:s:c:C:i:m:n:k:d:")) != -1) {
		switch (c) {
		case 'r': o.retries = (uint32_t)atoi(optarg); break;
		case 'b': o.backoff_ms = (uint32_t)atoi(optarg); break;
		case 's': o.stall_timeout_ms = (uint32_t)atoi(optarg); break;
		case 'c': o.connect_timeout_ms = (uint32_t)atoi(optarg); break;
		case 'C': o.docker_config = optarg; break;
		case 'i': if (o.ninsecure < MAX_LIST) insecure[o.ninsecure++] = optarg; break;
		case 'm': if (o.nmirrors < MAX_LIST) mirrors[o.nmirrors++] = optarg; break;
		case 'n': repeat = atoi(optarg); break;
		case 'k': chunk = (size_t)atol(optarg); break;
		case 'd': delay_us = (useconds_t)atoi(optarg); break;
		default: return usage();
		}
	}
	if (argc - optind < 3 || !chunk)
		return usage();
	snprintf(ref.domain, sizeof(ref.domain), "%s", argv[optind + 1]);
	snprintf(ref.path, sizeof(ref.path), "%s", argv[optind + 2]);
	snprintf(ref.tag, sizeof(ref.tag), "latest");
	if (registry_new(&o, &reg, &err) < 0)
		return report_error("", &err);
	for (int i = 0; i < repeat && rc == 0; i++)
		rc = run(argv[optind], argc - optind - 3, argv + optind + 3);
	registry_free(reg);
	return rc == 2 ? usage() : rc;
}
