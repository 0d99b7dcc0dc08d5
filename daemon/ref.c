/* Image references.
 *
 * The grammar is docker/distribution's reference package:
 *
 *	reference  := name [ ":" tag ] [ "@" digest ]
 *	name       := [ domain "/" ] path
 *	domain     := host [ ":" port ]
 *	host       := label ( "." label )* | "[" ipv6 "]"
 *	path       := component ( "/" component )*
 *	component  := [a-z0-9]+ ( ( [._] | "__" | "-"+ ) [a-z0-9]+ )*
 *	tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
 *
 * plus the normalisation "docker pull" applies: a first component is a
 * domain only if it has a '.' or ':' or is "localhost", so "alpine" and
 * "x/y" live on docker.io, where single names sit under "library/".  Only
 * sha256 digests are accepted since that is all registries hand out and
 * all digest_parse can hold. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ref.h"

#define DOCKER_DOMAIN "docker.io"
#define DOCKER_LEGACY_DOMAIN "index.docker.io"
#define DOCKER_REGISTRY "registry-1.docker.io"
/* distribution's NameTotalLengthMax, over "domain/path". */
#define NAME_TOTAL_MAX 255
#define TAG_MAX 128

/* Explicit ranges rather than <ctype.h>: the grammar is ASCII whatever
 * the locale says. */
static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_hex_lower(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static int hex_val(char c)
{
	return c <= '9' ? c - '0' : c - 'a' + 10;
}

int digest_parse(const char *s, uint8_t out[32])
{
	static const char prefix[] = "sha256:";
	const size_t plen = sizeof(prefix) - 1;

	if (!s || strncmp(s, prefix, plen) || strlen(s) != plen + 64)
		return -EINVAL;
	s += plen;
	for (size_t i = 0; i < 64; i++)
		if (!is_hex_lower(s[i]))
			return -EINVAL;
	for (size_t i = 0; i < 32; i++)
		out[i] = (uint8_t)(hex_val(s[2 * i]) << 4 | hex_val(s[2 * i + 1]));
	return 0;
}

void digest_format(const uint8_t d[32], char out[72])
{
	static const char hex[] = "0123456789abcdef";

	memcpy(out, "sha256:", 7);
	for (size_t i = 0; i < 32; i++) {
		out[7 + 2 * i] = hex[d[i] >> 4];
		out[8 + 2 * i] = hex[d[i] & 15];
	}
	out[71] = '\0';
}

/* One path component: alphanumeric runs joined by single separators. */
static bool valid_component(const char *s, size_t n)
{
	size_t i = 0;

	for (;;) {
		if (i == n || !is_lower_alnum(s[i]))
			return false;
		while (i < n && is_lower_alnum(s[i]))
			i++;
		if (i == n)
			return true;
		if (s[i] == '.') {
			i++;
		} else if (s[i] == '_') {
			i++;
			if (i < n && s[i] == '_')
				i++;
		} else if (s[i] == '-') {
			while (i < n && s[i] == '-')
				i++;
		} else {
			return false;
		}
	}
}

static bool valid_path(const char *s, size_t n)
{
	const char *end = s + n;

	for (;;) {
		const char *slash = memchr(s, '/', (size_t)(end - s));
		const char *stop = slash ? slash : end;

		if (!valid_component(s, (size_t)(stop - s)))
			return false;
		if (!slash)
			return true;
		s = slash + 1;
	}
}

/* A DNS-style label: alphanumerics, inner hyphens. */
static bool valid_label(const char *s, size_t n)
{
	if (n == 0 || !is_alnum(s[0]) || !is_alnum(s[n - 1]))
		return false;
	for (size_t i = 1; i + 1 < n; i++)
		if (!is_alnum(s[i]) && s[i] != '-')
			return false;
	return true;
}

static bool valid_hostname(const char *s, size_t n)
{
	const char *end = s + n;

	for (;;) {
		const char *dot = memchr(s, '.', (size_t)(end - s));
		const char *stop = dot ? dot : end;

		if (!valid_label(s, (size_t)(stop - s)))
			return false;
		if (!dot)
			return true;
		s = dot + 1;
	}
}

/* "[" hex-and-colons "]", as loose as distribution's own pattern. */
static size_t ipv6_len(const char *s, size_t n)
{
	size_t i = 1;

	if (n < 3 || s[0] != '[')
		return 0;
	while (i < n && (is_hex_lower(s[i]) || (s[i] >= 'A' && s[i] <= 'F') ||
			 s[i] == ':'))
		i++;
	if (i == 1 || i == n || s[i] != ']')
		return 0;
	return i + 1;
}

static bool valid_domain(const char *s, size_t n)
{
	size_t host = ipv6_len(s, n);

	if (!host) {
		const char *colon = memchr(s, ':', n);

		host = colon ? (size_t)(colon - s) : n;
		if (!valid_hostname(s, host))
			return false;
	}
	if (host == n)
		return true;
	if (s[host] != ':' || host + 1 == n)
		return false;
	for (size_t i = host + 1; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

static bool valid_tag(const char *s, size_t n)
{
	if (n == 0 || n > TAG_MAX || (!is_alnum(s[0]) && s[0] != '_'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!is_alnum(s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
			return false;
	return true;
}

static bool has_upper(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] >= 'A' && s[i] <= 'Z')
			return true;
	return false;
}

/* A bare image ID: docker refuses it as a name so that "docker pull <id>"
 * cannot silently fetch a repository that happens to be called that. */
static bool is_image_id(const char *s)
{
	if (strlen(s) != 64)
		return false;
	for (size_t i = 0; i < 64; i++)
		if (!is_hex_lower(s[i]))
			return false;
	return true;
}

static bool first_is_domain(const char *s, size_t n)
{
	return memchr(s, '.', n) || memchr(s, ':', n) ||
	       (n == 9 && !memcmp(s, "localhost", 9));
}

__attribute__((format(printf, 3, 4)))
static int bad_ref(struct daxfs_err *err, const char *s, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return daxfs_err_set(err, -EINVAL, "invalid reference \"%.200s\": %s",
			     s, why);
}

#define BAD(...) bad_ref(err, s, __VA_ARGS__)

/* Split the name part (the first n bytes of s) into domain and path,
 * applying docker.io's defaults. */
static int split_name(const char *s, size_t n, struct image_ref *out,
		      struct daxfs_err *err)
{
	const char *name = s;
	const char *slash = memchr(name, '/', n);
	const char *dom = DOCKER_DOMAIN, *path = name;
	size_t dlen = strlen(DOCKER_DOMAIN), plen = n;
	const char *lib = "";

	if (slash && first_is_domain(name, (size_t)(slash - name))) {
		dom = name;
		dlen = (size_t)(slash - name);
		path = slash + 1;
		plen = n - dlen - 1;
		if (!valid_domain(dom, dlen))
			return BAD("bad registry host \"%.*s\"", (int)dlen, dom);
		if (dlen == strlen(DOCKER_LEGACY_DOMAIN) &&
		    !memcmp(dom, DOCKER_LEGACY_DOMAIN, dlen)) {
			dom = DOCKER_DOMAIN;
			dlen = strlen(DOCKER_DOMAIN);
		}
	}
	if (plen == 0)
		return BAD("empty repository name");
	if (has_upper(path, plen))
		return BAD("repository name must be lowercase");
	if (!valid_path(path, plen))
		return BAD("bad repository name \"%.*s\"", (int)plen, path);
	if (dlen == strlen(DOCKER_DOMAIN) && !memcmp(dom, DOCKER_DOMAIN, dlen) &&
	    !memchr(path, '/', plen))
		lib = "library/";
	if (dlen + 1 + strlen(lib) + plen > NAME_TOTAL_MAX)
		return BAD("name longer than %d characters", NAME_TOTAL_MAX);
	snprintf(out->domain, sizeof(out->domain), "%.*s", (int)dlen, dom);
	snprintf(out->path, sizeof(out->path), "%s%.*s", lib, (int)plen, path);
	return 0;
}

int ref_parse(const char *s, struct image_ref *out, struct daxfs_err *err)
{
	const char *at, *colon, *slash;
	size_t n;

	memset(out, 0, sizeof(*out));
	if (!s || !*s)
		return daxfs_err_set(err, -EINVAL, "invalid reference: empty");
	if (is_image_id(s))
		return BAD("a 64-hex image ID is not a repository name");
	at = strchr(s, '@');
	n = at ? (size_t)(at - s) : strlen(s);
	if (at) {
		uint8_t d[32];

		if (digest_parse(at + 1, d) < 0)
			return BAD("bad digest (want sha256:<64 lowercase hex>)");
		digest_format(d, out->digest);
	}
	/* A ':' after the last '/' starts the tag; earlier ones are ports. */
	colon = memrchr(s, ':', n);
	slash = memrchr(s, '/', n);
	if (colon && (!slash || colon > slash)) {
		size_t tlen = n - (size_t)(colon - s) - 1;

		if (!valid_tag(colon + 1, tlen))
			return BAD("%s", tlen ? "bad tag" : "empty tag");
		snprintf(out->tag, sizeof(out->tag), "%.*s", (int)tlen, colon + 1);
		n = (size_t)(colon - s);
	} else if (!at) {
		strcpy(out->tag, "latest");
	}
	return split_name(s, n, out, err);
}

#undef BAD

void ref_format(const struct image_ref *r, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s%s%s%s%s", r->domain, r->path,
		 r->tag[0] ? ":" : "", r->tag,
		 r->digest[0] ? "@" : "", r->digest);
}

const char *ref_registry_host(const struct image_ref *r)
{
	return strcmp(r->domain, DOCKER_DOMAIN) ? r->domain : DOCKER_REGISTRY;
}
