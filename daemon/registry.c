/* OCI distribution client.
 *
 * Every request -- manifest, blob or token -- is a "stream": one easy
 * handle driven through its own multi handle from the caller's thread, so
 * a blob is pulled at the pace its consumer reads it, with no threads, no
 * temporary files and a bounded buffer (the transfer is paused while the
 * buffer is full).  A stream owns the whole recovery story: auth
 * challenges, retries with backoff, mirror fallback, and resuming a broken
 * or stalled body with a Range request from the next byte. */
#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "manifest.h"
#include "registry.h"

#define BUF_CAP		(256 * 1024)	/* per stream; the transfer pauses when full */
#define CURL_BUF	(64 * 1024)	/* largest chunk curl hands over at once */
#define ERRBODY_MAX	4096		/* error body kept for the message */
#define HEADER_MAX	4096
#define MANIFEST_MAX	(4u << 20)	/* registries may refuse bigger ones too */
#define BLOB_MAX	(4u << 20)	/* registry_get_blob with max == 0 */
#define TOKEN_MAX	(256u << 10)
#define RETRY_AFTER_MAX	30		/* seconds; a longer wait is capped */
#define BACKOFF_MAX	30000		/* ms */
#define TOKEN_TTL	60		/* seconds, the spec's default expires_in */
#define UNKNOWN_SIZE	UINT64_MAX
#define USER_AGENT	"daxfsd/" DAXFS_VERSION_STRING

struct mirror {
	char *domain;
	char *base;		/* "http://127.0.0.1:5001", no trailing '/' */
};

/* A cached Authorization value.  Bearer tokens are kept per (host, scope);
 * Basic credentials under scope "" since they hold for the whole host. */
struct token {
	struct token *next;
	char *host;
	char *scope;
	char *auth;
	uint64_t expires;	/* monotonic ms */
};

struct registry {
	char **insecure;
	size_t ninsecure;
	struct mirror *mirrors;
	size_t nmirrors;
	char *docker_config;
	uint32_t connect_ms, stall_ms, retries, backoff_ms;
	pthread_mutex_t lock;	/* tokens */
	struct token *tokens;
};

struct endpoint {
	char *base;		/* scheme://host[:port][/prefix] */
	char host[300];		/* HOST[:PORT]: messages and the token cache */
	char cred_host[300];	/* docker config key: the image's domain */
	bool mirror;
};

struct stream {
	struct registry *r;
	const char *what;	/* "registry" or "token server" */
	const char *method;
	struct endpoint *ep;
	size_t nep, cur;
	char *rel;		/* appended to the endpoint's base */
	char *msg_path;		/* the path errors name */
	char *scope;		/* token cache key; NULL: no auth flow */
	const char *accept;
	char *post;		/* form body, or NULL for GET */
	char *auth;		/* Authorization value for the current endpoint */
	char *token_auth;	/* token requests: Basic credentials */
	unsigned auth_tries;	/* fresh credentials sent since the last 2xx */
	uint64_t size;		/* exact length, or UNKNOWN_SIZE */
	uint64_t limit;		/* most bytes accepted */
	bool limit_is_size;

	CURLM *multi;
	CURL *easy;
	struct curl_slist *hdrs;
	char errbuf[CURL_ERROR_SIZE];
	bool active, paused;

	uint8_t *buf;
	size_t cap, off, len;
	uint64_t got;		/* body bytes taken from the network */
	uint64_t skip;		/* bytes of this response we already have */
	bool eof;

	/* the current attempt */
	uint64_t att_got;	/* got when it started */
	uint64_t last_rx;
	curl_off_t last_dl, last_ul;
	bool connected, stalled, body_ok;
	long status;
	char reason[64];
	char *ctype;
	char *bearer;		/* Bearer challenge parameters */
	bool basic;		/* a Basic challenge */
	long retry_after;	/* seconds, -1 = none */
	long long range_start;	/* Content-Range first byte, -1 = none */
	char errbody[ERRBODY_MAX];
	size_t errlen;
	int cb_err;		/* -errno from a callback; detail in cb_msg */
	char cb_msg[256];

	uint32_t failures;	/* retryable failures in a row without progress */
	int error;		/* sticky once the stream failed */
	struct daxfs_err last;
};

struct registry_blob {
	struct stream s;
};

struct creds {
	char *user, *pass, *identity, *regtoken;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

static void digest_hex(const uint8_t d[32], char out[72])
{
	static const char hex[] = "0123456789abcdef";

	memcpy(out, "sha256:", 7);
	for (int i = 0; i < 32; i++) {
		out[7 + 2 * i] = hex[d[i] >> 4];
		out[8 + 2 * i] = hex[d[i] & 15];
	}
	out[71] = 0;
}

/* ---- hosts ---- */

/* "[::1]:5000" -> "::1", "host:port" -> "host". */
static void host_only(const char *hostport, char *out, size_t n)
{
	const char *end;
	size_t l;

	if (hostport[0] == '[') {
		end = strchr(hostport, ']');
		hostport++;
		l = end ? (size_t)(end - hostport) : strlen(hostport);
	} else {
		end = strchr(hostport, ':');
		l = end ? (size_t)(end - hostport) : strlen(hostport);
	}
	if (l >= n)
		l = n - 1;
	memcpy(out, hostport, l);
	out[l] = 0;
}

static bool is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (!strcasecmp(host, "localhost"))
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* Plain http is allowed for loopback and the configured insecure hosts
 * (an entry without a port covers every port of that host). */
static bool is_insecure(const struct registry *r, const char *hostport)
{
	char host[256];

	host_only(hostport, host, sizeof(host));
	if (is_loopback(host))
		return true;
	for (size_t i = 0; i < r->ninsecure; i++)
		if (!strcasecmp(r->insecure[i], hostport) ||
		    !strcasecmp(r->insecure[i], host))
			return true;
	return false;
}

/* The HOST[:PORT] of an http(s) URL, without any userinfo. */
static int url_host(const char *url, char *out, size_t n)
{
	const char *p = strstr(url, "://"), *at, *end;
	size_t l;

	if (!p)
		return -EINVAL;
	p += 3;
	end = p + strcspn(p, "/?#");
	at = memchr(p, '@', (size_t)(end - p));
	if (at)
		p = at + 1;
	l = (size_t)(end - p);
	if (!l || l >= n)
		return -EINVAL;
	memcpy(out, p, l);
	out[l] = 0;
	return 0;
}

static bool is_docker_hub(const char *h)
{
	return !strcasecmp(h, "docker.io") || !strcasecmp(h, "index.docker.io") ||
	       !strcasecmp(h, "registry-1.docker.io") ||
	       !strcasecmp(h, "registry.hub.docker.com");
}

/* ---- registry ---- */

static int add_mirror(struct registry *r, const char *spec, struct daxfs_err *err)
{
	const char *eq = strchr(spec, '=');
	struct mirror *m = &r->mirrors[r->nmirrors];
	char host[300];
	size_t l;

	if (!eq || eq == spec || (strncmp(eq + 1, "http://", 7) &&
				  strncmp(eq + 1, "https://", 8)) ||
	    url_host(eq + 1, host, sizeof(host)) < 0)
		return daxfs_err_set(err, -EINVAL,
				     "mirror '%s': want DOMAIN=http[s]://HOST[:PORT]", spec);
	m->domain = strndup(spec, (size_t)(eq - spec));
	m->base = strdup(eq + 1);
	if (!m->domain || !m->base) {
		free(m->domain);
		free(m->base);
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	}
	l = strlen(m->base);
	while (l && m->base[l - 1] == '/')
		m->base[--l] = 0;
	r->nmirrors++;
	return 0;
}

static int copy_opts(struct registry *r, const struct registry_opts *o,
		     struct daxfs_err *err)
{
	const char *home = getenv("HOME");
	int rc;

	r->connect_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 10000;
	r->stall_ms = o->stall_timeout_ms ? o->stall_timeout_ms : 30000;
	r->retries = o->retries ? o->retries : 5;
	r->backoff_ms = o->backoff_ms ? o->backoff_ms : 200;
	if (o->docker_config)
		r->docker_config = strdup(o->docker_config);
	else
		r->docker_config = xasprintf("%s/.docker/config.json", home ? home : "/root");
	r->insecure = calloc(o->ninsecure + 1, sizeof(*r->insecure));
	r->mirrors = calloc(o->nmirrors + 1, sizeof(*r->mirrors));
	if (!r->docker_config || !r->insecure || !r->mirrors)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < o->ninsecure; i++) {
		r->insecure[i] = strdup(o->insecure[i]);
		if (!r->insecure[i])
			return daxfs_err_set(err, -ENOMEM, "out of memory");
		r->ninsecure++;
	}
	for (size_t i = 0; i < o->nmirrors; i++) {
		rc = add_mirror(r, o->mirrors[i], err);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int registry_new(const struct registry_opts *o, struct registry **out,
		 struct daxfs_err *err)
{
	static const struct registry_opts defaults;
	struct registry *r;
	int rc;

	*out = NULL;
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK)
		return daxfs_err_set(err, -EIO, "libcurl: %s",
				     curl_easy_strerror(curl_init_rc));
	r = calloc(1, sizeof(*r));
	if (!r)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	pthread_mutex_init(&r->lock, NULL);
	rc = copy_opts(r, o ? o : &defaults, err);
	if (rc < 0) {
		registry_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

static void token_free(struct token *t)
{
	free(t->host);
	free(t->scope);
	free(t->auth);
	free(t);
}

void registry_free(struct registry *r)
{
	struct token *t;

	if (!r)
		return;
	while ((t = r->tokens)) {
		r->tokens = t->next;
		token_free(t);
	}
	for (size_t i = 0; i < r->ninsecure; i++)
		free(r->insecure[i]);
	for (size_t i = 0; i < r->nmirrors; i++) {
		free(r->mirrors[i].domain);
		free(r->mirrors[i].base);
	}
	free(r->insecure);
	free(r->mirrors);
	free(r->docker_config);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

/* ---- token cache ---- */

/* A copy of the cached Authorization value for (host, scope), falling
 * back to the host's Basic credentials; NULL if none. */
static char *cache_get(struct registry *r, const char *host, const char *scope)
{
	uint64_t now = mono_ms();
	char *found = NULL;

	pthread_mutex_lock(&r->lock);
	for (struct token *t = r->tokens; t; t = t->next) {
		if (strcmp(t->host, host) || t->expires <= now)
			continue;
		if (!strcmp(t->scope, scope) || (!t->scope[0] && !found)) {
			free(found);
			found = strdup(t->auth);
			if (t->scope[0])
				break;
		}
	}
	pthread_mutex_unlock(&r->lock);
	return found;
}

static void cache_drop_locked(struct registry *r, const char *host,
			      const char *scope, const char *auth)
{
	struct token **pp = &r->tokens, *t;

	while ((t = *pp)) {
		if (!strcmp(t->host, host) &&
		    ((scope && !strcmp(t->scope, scope)) ||
		     (auth && !strcmp(t->auth, auth)))) {
			*pp = t->next;
			token_free(t);
		} else {
			pp = &t->next;
		}
	}
}

/* Forget a value the registry refused. */
static void cache_drop(struct registry *r, const char *host, const char *auth)
{
	pthread_mutex_lock(&r->lock);
	cache_drop_locked(r, host, NULL, auth);
	pthread_mutex_unlock(&r->lock);
}

static void cache_put(struct registry *r, const char *host, const char *scope,
		      const char *auth, uint64_t ttl_ms)
{
	struct token *t = calloc(1, sizeof(*t));

	if (!t)
		return;		/* only a cache */
	t->host = strdup(host);
	t->scope = strdup(scope);
	t->auth = strdup(auth);
	t->expires = ttl_ms == UINT64_MAX ? UINT64_MAX : mono_ms() + ttl_ms;
	if (!t->host || !t->scope || !t->auth) {
		token_free(t);
		return;
	}
	pthread_mutex_lock(&r->lock);
	cache_drop_locked(r, host, scope, NULL);
	t->next = r->tokens;
	r->tokens = t;
	pthread_mutex_unlock(&r->lock);
}

/* ---- docker config credentials ---- */

static void creds_free(struct creds *c)
{
	free(c->user);
	free(c->pass);
	free(c->identity);
	free(c->regtoken);
	memset(c, 0, sizeof(*c));
}

/* Keys look like "host[:port]", "https://index.docker.io/v1/" or
 * "http://host:port". */
static bool auth_key_matches(const char *key, const char *host)
{
	char k[300];
	const char *p = strstr(key, "://");

	p = p ? p + 3 : key;
	snprintf(k, sizeof(k), "%.*s", (int)strcspn(p, "/"), p);
	if (!strcasecmp(k, host))
		return true;
	return is_docker_hub(k) && is_docker_hub(host);
}

static char *json_strdup(json_t *obj, const char *key)
{
	const char *v = json_string_value(json_object_get(obj, key));

	return v && v[0] ? strdup(v) : NULL;
}

/* "auth" is base64("user:pass"). */
static int decode_auth(const char *b64, struct creds *c)
{
	size_t l = strlen(b64), pad = 0;
	unsigned char *raw;
	char *colon;
	int n;

	if (!l || l % 4)
		return -EINVAL;
	raw = malloc(l / 4 * 3 + 1);
	if (!raw)
		return -ENOMEM;
	n = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)l);
	while (pad < 2 && b64[l - 1 - pad] == '=')
		pad++;
	if (n < 0 || (size_t)n < pad) {
		free(raw);
		return -EINVAL;
	}
	raw[(size_t)n - pad] = 0;
	colon = strchr((char *)raw, ':');
	if (!colon) {
		free(raw);
		return -EINVAL;
	}
	*colon = 0;
	c->user = strdup((char *)raw);
	c->pass = strdup(colon + 1);
	free(raw);
	return c->user && c->pass ? 0 : -ENOMEM;
}

static int creds_from_entry(json_t *e, struct creds *c)
{
	const char *a = json_string_value(json_object_get(e, "auth"));
	int rc = 0;

	if (a && a[0])
		rc = decode_auth(a, c);
	if (rc == 0 && !c->user) {
		c->user = json_strdup(e, "username");
		c->pass = json_strdup(e, "password");
	}
	c->identity = json_strdup(e, "identitytoken");
	c->regtoken = json_strdup(e, "registrytoken");
	if (rc == 0 && !(c->user && c->pass) && !c->identity && !c->regtoken)
		rc = -ENOENT;
	return rc;
}

/* Credentials for host from the docker config: 0, -ENOENT if it has none
 * (or the file does not exist), or -errno with err set. */
static int creds_load(struct registry *r, const char *host, struct creds *c,
		      struct daxfs_err *err)
{
	const char *key;
	json_error_t je;
	json_t *root, *e;
	struct stat st;
	int rc = -ENOENT;

	memset(c, 0, sizeof(*c));
	if (stat(r->docker_config, &st) < 0 && errno == ENOENT)
		return -ENOENT;
	root = json_load_file(r->docker_config, 0, &je);
	if (!root)
		return daxfs_err_set(err, -EINVAL, "docker config %s: line %d: %s",
				     r->docker_config, je.line, je.text);
	json_object_foreach(json_object_get(root, "auths"), key, e) {
		if (!auth_key_matches(key, host))
			continue;
		rc = creds_from_entry(e, c);
		if (rc == -ENOENT)
			continue;
		if (rc < 0) {
			creds_free(c);
			rc = daxfs_err_set(err, rc, "docker config %s: bad \"auth\" for %s",
					   r->docker_config, key);
		}
		break;
	}
	json_decref(root);
	return rc;
}

static char *basic_auth(const char *user, const char *pass)
{
	char *plain = xasprintf("%s:%s", user, pass), *out;
	size_t l;

	if (!plain)
		return NULL;
	l = strlen(plain);
	out = malloc(6 + 4 * ((l + 2) / 3) + 1);
	if (out) {
		memcpy(out, "Basic ", 6);
		EVP_EncodeBlock((unsigned char *)out + 6, (unsigned char *)plain, (int)l);
	}
	explicit_bzero(plain, l);
	free(plain);
	return out;
}

/* ---- messages ---- */

static const char *reason_of(long status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 416: return "Range Not Satisfiable";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "";
	}
}

static int status_errno(long status)
{
	if (status == 401 || status == 403)
		return -EACCES;
	if (status == 404)
		return -ENOENT;
	if (status == 429)
		return -EAGAIN;
	if (status >= 500)
		return -EIO;
	return -EPROTO;
}

/* "(CODE: message; CODE: message)" from an OCI error body, if it is one. */
static void error_body_detail(const char *body, size_t len, char *out, size_t n)
{
	json_t *root = json_loadb(body, len, 0, NULL), *e;
	size_t i, k = 0;

	out[0] = 0;
	json_array_foreach(json_object_get(root, "errors"), i, e) {
		const char *code = json_string_value(json_object_get(e, "code"));
		const char *msg = json_string_value(json_object_get(e, "message"));

		if (i == 3 || k + 4 >= n)
			break;
		k += (size_t)snprintf(out + k, n - k, "%s%s%s%s", k ? "; " : " (",
				      code ? code : "", code && msg ? ": " : "",
				      msg ? msg : "");
	}
	if (k && k + 1 < n)
		strcat(out, ")");
	json_decref(root);
}

/* "404 Not Found (MANIFEST_UNKNOWN: manifest unknown)" */
static void http_detail(const struct stream *s, char *out, size_t n)
{
	char extra[300];

	error_body_detail(s->errbody, s->errlen, extra, sizeof(extra));
	snprintf(out, n, "%ld %s%s", s->status,
		 s->reason[0] ? s->reason : reason_of(s->status), extra);
}

static const char *cur_host(const struct stream *s)
{
	return s->ep[s->cur].host;
}

/* Record "registry HOST: GET PATH: detail" as the stream's last error. */
__attribute__((format(printf, 3, 4)))
static int set_last(struct stream *s, int code, const char *fmt, ...)
{
	char detail[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	return daxfs_err_set(&s->last, code, "%s %s: %s %s: %s", s->what,
			     cur_host(s), s->method, s->msg_path, detail);
}

/* ---- stream callbacks ---- */

static void response_reset(struct stream *s)
{
	s->status = 0;
	s->reason[0] = 0;
	s->body_ok = false;
	free(s->ctype);
	s->ctype = NULL;
	free(s->bearer);
	s->bearer = NULL;
	s->basic = false;
	s->retry_after = -1;
	s->range_start = -1;
	s->errlen = 0;
}

static void parse_status(struct stream *s, const char *line)
{
	const char *p = strchr(line, ' ');

	response_reset(s);
	if (!p)
		return;
	s->status = strtol(p + 1, (char **)&p, 10);
	while (*p == ' ')
		p++;
	snprintf(s->reason, sizeof(s->reason), "%s", p);
}

static int cb_fail(struct stream *s, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int cb_fail(struct stream *s, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->cb_msg, sizeof(s->cb_msg), fmt, ap);
	va_end(ap);
	s->cb_err = code;
	return code;
}

/* The final response's headers are in: decide what its body is.  A 206
 * must start where we asked; a 200 to a Range request repeats what we
 * already have, which is skipped. */
static int headers_end(struct stream *s)
{
	if (s->status < 200 || s->status > 299)
		return 0;
	s->body_ok = true;
	s->auth_tries = 0;
	s->skip = s->got;
	if (s->status == 206 && s->range_start >= 0) {
		if ((uint64_t)s->range_start > s->got)
			return cb_fail(s, -EPROTO, "resumed at byte %lld, asked for %llu",
				       s->range_start, (unsigned long long)s->got);
		s->skip = s->got - (uint64_t)s->range_start;
	} else if (s->status == 206) {
		s->skip = 0;
	}
	return 0;
}

static void header_field(struct stream *s, const char *name, const char *v)
{
	if (!strcasecmp(name, "content-type")) {
		free(s->ctype);
		s->ctype = strndup(v, strcspn(v, "; \t"));
	} else if (!strcasecmp(name, "www-authenticate")) {
		if (!strncasecmp(v, "bearer ", 7) && !s->bearer)
			s->bearer = strdup(v + 7);
		else if (!strncasecmp(v, "basic", 5))
			s->basic = true;
	} else if (!strcasecmp(name, "retry-after")) {
		if (isdigit((unsigned char)v[0]))
			s->retry_after = strtol(v, NULL, 10);
	} else if (!strcasecmp(name, "content-range")) {
		if (!strncasecmp(v, "bytes ", 6) && isdigit((unsigned char)v[6]))
			s->range_start = strtoll(v + 6, NULL, 10);
	}
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct stream *s = arg;
	size_t len = size * n, l = len < HEADER_MAX - 1 ? len : HEADER_MAX - 1;
	char line[HEADER_MAX], *colon, *v;

	s->last_rx = mono_ms();
	memcpy(line, p, l);
	while (l && (line[l - 1] == '\n' || line[l - 1] == '\r' || line[l - 1] == ' '))
		l--;
	line[l] = 0;
	if (!strncmp(line, "HTTP/", 5)) {
		parse_status(s, line);
		return len;
	}
	if (!l)
		return headers_end(s) < 0 ? 0 : len;
	colon = strchr(line, ':');
	if (!colon)
		return len;
	*colon = 0;
	for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
		;
	header_field(s, line, v);
	return len;
}

/* Make room for n more bytes; false if the buffer is full for now. */
static bool buf_room(struct stream *s, size_t n)
{
	uint8_t *nb;

	if (s->off + s->len + n <= s->cap)
		return true;
	if (s->off) {
		memmove(s->buf, s->buf + s->off, s->len);
		s->off = 0;
	}
	if (s->len + n <= s->cap)
		return true;
	if (s->len)
		return false;
	/* A chunk larger than the whole buffer: curl never does that with
	 * CURLOPT_BUFFERSIZE below the capacity, but do not wedge if it did. */
	nb = realloc(s->buf, n);
	if (!nb)
		return false;
	s->buf = nb;
	s->cap = n;
	return true;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct stream *s = arg;
	size_t len = size * n, drop, rest;

	s->last_rx = mono_ms();
	if (!s->body_ok) {
		rest = len < ERRBODY_MAX - 1 - s->errlen ? len : ERRBODY_MAX - 1 - s->errlen;
		memcpy(s->errbody + s->errlen, p, rest);
		s->errlen += rest;
		return len;
	}
	drop = s->skip < len ? (size_t)s->skip : len;
	rest = len - drop;
	if (rest && s->got + rest > s->limit) {
		if (s->limit_is_size)
			cb_fail(s, -EBADMSG, "more data than the expected %llu bytes",
				(unsigned long long)s->limit);
		else
			cb_fail(s, -EFBIG, "response larger than %llu bytes",
				(unsigned long long)s->limit);
		return 0;
	}
	/* Pausing makes curl offer the same chunk again later, so nothing
	 * may change before this point. */
	if (rest && !buf_room(s, rest)) {
		s->paused = true;
		return CURL_WRITEFUNC_PAUSE;
	}
	s->skip -= drop;
	memcpy(s->buf + s->off + s->len, p + drop, rest);
	s->len += rest;
	s->got += rest;
	return len;
}

/* Stall detection with millisecond precision (curl's low-speed limit
 * counts whole seconds).  The clock starts once connected -- connecting
 * has its own timeout -- and stops while we hold the transfer paused. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
		       curl_off_t ultotal, curl_off_t ulnow)
{
	struct stream *s = arg;
	uint64_t now = mono_ms();

	(void)dltotal;
	(void)ultotal;
	if (!s->connected || s->paused || dlnow != s->last_dl || ulnow != s->last_ul) {
		s->last_dl = dlnow;
		s->last_ul = ulnow;
		s->last_rx = now;
		return 0;
	}
	if (now - s->last_rx < s->r->stall_ms)
		return 0;
	s->stalled = true;
	return 1;
}

/* Called for every request once its connection is up (after redirects
 * too): the point from which silence counts as a stall. */
static int on_prereq(void *arg, char *pip, char *lip, int pport, int lport)
{
	struct stream *s = arg;

	(void)pip;
	(void)lip;
	(void)pport;
	(void)lport;
	s->connected = true;
	s->last_rx = mono_ms();
	return CURL_PREREQFUNC_OK;
}

/* ---- attempts ---- */

static int add_header(struct stream *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int add_header(struct stream *s, const char *fmt, ...)
{
	struct curl_slist *l;
	va_list ap;
	char *h;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&h, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	l = curl_slist_append(s->hdrs, h);
	free(h);
	if (!l)
		return -ENOMEM;
	s->hdrs = l;
	return 0;
}

static int build_headers(struct stream *s)
{
	int rc = 0;

	curl_slist_free_all(s->hdrs);
	s->hdrs = NULL;
	if (s->accept)
		rc = add_header(s, "Accept: %s", s->accept);
	/* A custom header rather than CURLOPT_RANGE, so that curl hands us a
	 * 200 from a server ignoring Range instead of failing the transfer. */
	if (!rc && s->got)
		rc = add_header(s, "Range: bytes=%llu-", (unsigned long long)s->got);
	/* curl drops custom Authorization headers when a redirect leads to
	 * another host, port or scheme: blob storage never sees them. */
	if (!rc && (s->auth || s->token_auth))
		rc = add_header(s, "Authorization: %s", s->auth ? s->auth : s->token_auth);
	if (!rc && s->post)
		rc = add_header(s, "Content-Type: application/x-www-form-urlencoded");
	return rc;
}

static int easy_setup(struct stream *s, const char *url)
{
	CURL *h = s->easy;
	bool bad = false;

	curl_easy_reset(h);
	s->errbuf[0] = 0;
	bad |= curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_ERRORBUFFER, s->errbuf) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_USERAGENT, USER_AGENT) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_HTTPHEADER, s->hdrs) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)s->r->connect_ms) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)CURL_BUF) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_HEADERDATA, s) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_WRITEDATA, s) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_XFERINFODATA, s) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, on_prereq) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_PREREQDATA, s) != CURLE_OK;
	if (s->post)
		bad |= curl_easy_setopt(h, CURLOPT_POSTFIELDS, s->post) != CURLE_OK;
	return bad ? -EINVAL : 0;
}

static int attempt_start(struct stream *s)
{
	struct endpoint *e = &s->ep[s->cur];
	char *url;
	int rc;

	if (s->scope && !s->auth)
		s->auth = cache_get(s->r, e->host, s->scope);
	url = xasprintf("%s%s", e->base, s->rel);
	rc = url ? build_headers(s) : -ENOMEM;
	if (rc == 0)
		rc = easy_setup(s, url);
	free(url);
	if (rc < 0)
		return set_last(s, rc, "cannot set up the request");
	response_reset(s);
	s->att_got = s->got;
	s->skip = 0;
	s->last_rx = mono_ms();
	s->last_dl = s->last_ul = 0;
	s->connected = s->stalled = s->paused = false;
	s->cb_err = 0;
	if (curl_multi_add_handle(s->multi, s->easy) != CURLM_OK)
		return set_last(s, -ENOMEM, "cannot start the request");
	s->active = true;
	return 0;
}

/* Switch to the next endpoint after a mirror failed; false if there is
 * none.  What was received so far is kept: the next one resumes. */
static bool next_endpoint(struct stream *s)
{
	if (!s->ep[s->cur].mirror || s->cur + 1 >= s->nep)
		return false;
	s->cur++;
	s->failures = 0;
	s->auth_tries = 0;
	free(s->auth);
	s->auth = NULL;
	return true;
}

/* The stream cannot go on: the error in s->last is final (unless a
 * mirror failed and the next endpoint is worth a try). */
static int give_up(struct stream *s)
{
	if (next_endpoint(s))
		return 0;
	s->error = -s->last.code;
	return s->error;
}

static uint64_t backoff_delay(const struct stream *s)
{
	uint64_t d = s->r->backoff_ms;

	if (s->retry_after >= 0)
		return (uint64_t)(s->retry_after < RETRY_AFTER_MAX ? s->retry_after :
				  RETRY_AFTER_MAX) * 1000;
	for (uint32_t i = 1; i < s->failures && d < BACKOFF_MAX; i++)
		d *= 2;
	return d < BACKOFF_MAX ? d : BACKOFF_MAX;
}

/* A transient failure (message in s->last): wait and go again, unless the
 * retries are used up.  An attempt that brought new bytes resets the
 * count: only failures in a row without progress add up. */
static int retry(struct stream *s)
{
	size_t l;

	if (s->got > s->att_got)
		s->failures = 0;
	if (next_endpoint(s))
		return 0;
	if (++s->failures > s->r->retries) {
		l = strlen(s->last.msg);
		snprintf(s->last.msg + l, sizeof(s->last.msg) - l,
			 " (gave up after %u attempts)", s->failures);
		s->error = -s->last.code;
		return s->error;
	}
	sleep_ms(backoff_delay(s));
	return 0;
}

static int curl_errno(CURLcode c, bool *transient)
{
	*transient = true;
	switch (c) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_PARTIAL_FILE:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_SSL_CONNECT_ERROR:
		return -ECONNRESET;
	default:
		break;
	}
	*transient = false;
	switch (c) {
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_TOO_MANY_REDIRECTS:
		return -ELOOP;
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EPROTONOSUPPORT;
	case CURLE_PEER_FAILED_VERIFICATION:
		return -EPROTO;
	default:
		return -EIO;
	}
}

static int on_401(struct stream *s, const char *detail);

static int attempt_done(struct stream *s, CURLcode res)
{
	char detail[400];
	bool transient;
	int code;

	curl_multi_remove_handle(s->multi, s->easy);
	s->active = false;
	s->paused = false;
	if (s->cb_err) {
		set_last(s, s->cb_err, "%s", s->cb_msg);
		return give_up(s);
	}
	/* Everything arrived: a connection dying afterwards does not matter. */
	if (s->body_ok && (res == CURLE_OK || s->got == s->size)) {
		if (s->size == UNKNOWN_SIZE || s->got >= s->size) {
			s->eof = true;
			s->failures = 0;
			return 0;
		}
		set_last(s, -ECONNRESET, "connection closed after %llu of %llu bytes",
			 (unsigned long long)s->got, (unsigned long long)s->size);
		return retry(s);
	}
	if (res != CURLE_OK) {
		if (s->stalled) {
			set_last(s, -ETIMEDOUT, "no data for %u ms", s->r->stall_ms);
			return retry(s);
		}
		code = curl_errno(res, &transient);
		set_last(s, code, "%s", s->errbuf[0] ? s->errbuf : curl_easy_strerror(res));
		return transient ? retry(s) : give_up(s);
	}
	http_detail(s, detail, sizeof(detail));
	if (s->status == 401 && s->scope)
		return on_401(s, detail);
	set_last(s, status_errno(s->status), "%s", detail);
	if (s->status == 429 || s->status >= 500)
		return retry(s);
	return give_up(s);
}

/* ---- driving a stream ---- */

static int poll_ms(const struct stream *s)
{
	uint32_t ms = s->r->stall_ms / 8;

	/* Wake up often enough for the progress callback to see a stall. */
	return (int)(ms < 5 ? 5 : ms > 200 ? 200 : ms);
}

static int stream_step(struct stream *s, bool headers_only)
{
	CURLMcode mc;
	CURLMsg *m;
	int running, left, rc;

	if (!s->active) {
		rc = attempt_start(s);
		if (rc < 0)
			return give_up(s);
	}
	mc = curl_multi_perform(s->multi, &running);
	if (mc != CURLM_OK) {
		set_last(s, -EIO, "%s", curl_multi_strerror(mc));
		return give_up(s);
	}
	while ((m = curl_multi_info_read(s->multi, &left)))
		if (m->msg == CURLMSG_DONE)
			return attempt_done(s, m->data.result);
	if (s->len || (headers_only && s->body_ok))
		return 0;
	mc = curl_multi_poll(s->multi, NULL, 0, poll_ms(s), NULL);
	if (mc != CURLM_OK) {
		set_last(s, -EIO, "%s", curl_multi_strerror(mc));
		return give_up(s);
	}
	return 0;
}

/* Run the transfer until there are bytes to hand out, the end, or an
 * error; with headers_only, until the response's body is known to be the
 * data.  The error (sticky) goes to err. */
static int stream_pump(struct stream *s, bool headers_only, struct daxfs_err *err)
{
	/* Only silence while we wait counts as a stall, not the time the
	 * caller spent elsewhere between reads. */
	if (s->active && !s->len)
		s->last_rx = mono_ms();
	while (!s->error && !s->len && !s->eof && !(headers_only && s->body_ok))
		if (stream_step(s, headers_only) < 0)
			break;
	if (s->error) {
		if (err)
			*err = s->last;
		return s->error;
	}
	return 0;
}

static ssize_t stream_read(struct stream *s, void *buf, size_t len,
			   struct daxfs_err *err)
{
	size_t n;
	int rc;

	if (!len)
		return 0;
	rc = stream_pump(s, false, err);
	if (rc < 0)
		return rc;
	n = s->len < len ? s->len : len;
	memcpy(buf, s->buf + s->off, n);
	s->off += n;
	s->len -= n;
	if (!s->len)
		s->off = 0;
	if (s->paused && s->active) {
		/* Room again: curl redelivers the chunk it held back, perhaps
		 * right here from inside curl_easy_pause. */
		s->paused = false;
		s->last_rx = mono_ms();
		curl_easy_pause(s->easy, CURLPAUSE_CONT);
	}
	return (ssize_t)n;
}

/* Read the whole body (at most s->limit bytes) into a NUL-terminated
 * malloc'd buffer. */
static int stream_slurp(struct stream *s, char **body, size_t *len,
			struct daxfs_err *err)
{
	size_t cap = 4096, n = 0;
	char *b = malloc(cap), *nb;
	ssize_t got;

	if (!b)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	for (;;) {
		if (cap - n < 2048) {
			nb = realloc(b, cap * 2);
			if (!nb) {
				free(b);
				return daxfs_err_set(err, -ENOMEM, "out of memory");
			}
			b = nb;
			cap *= 2;
		}
		got = stream_read(s, b + n, cap - n - 1, err);
		if (got <= 0)
			break;
		n += (size_t)got;
	}
	if (got < 0) {
		free(b);
		return (int)got;
	}
	b[n] = 0;
	*body = b;
	*len = n;
	return 0;
}

/* ---- streams ---- */

static void stream_free(struct stream *s)
{
	if (!s)
		return;
	if (s->active)
		curl_multi_remove_handle(s->multi, s->easy);
	if (s->easy)
		curl_easy_cleanup(s->easy);
	if (s->multi)
		curl_multi_cleanup(s->multi);
	curl_slist_free_all(s->hdrs);
	for (size_t i = 0; i < s->nep; i++)
		free(s->ep[i].base);
	free(s->ep);
	free(s->rel);
	free(s->msg_path);
	free(s->scope);
	free(s->post);
	if (s->auth)
		explicit_bzero(s->auth, strlen(s->auth));
	free(s->auth);
	free(s->token_auth);
	free(s->buf);
	free(s->ctype);
	free(s->bearer);
}

static int stream_init(struct stream *s, struct registry *r, size_t nep,
		       struct daxfs_err *err)
{
	memset(s, 0, sizeof(*s));
	s->r = r;
	s->what = "registry";
	s->method = "GET";
	s->size = UNKNOWN_SIZE;
	s->limit = UNKNOWN_SIZE;
	s->retry_after = -1;
	s->range_start = -1;
	s->cap = BUF_CAP;
	s->buf = malloc(s->cap);
	s->ep = calloc(nep, sizeof(*s->ep));
	s->multi = curl_multi_init();
	s->easy = curl_easy_init();
	if (!s->buf || !s->ep || !s->multi || !s->easy)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	return 0;
}

static bool repo_path_ok(const char *p)
{
	if (!p[0] || p[0] == '/')
		return false;
	for (; *p; p++)
		if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) &&
		    !strchr("._-/", *p))
			return false;
	return true;
}

/* Mirrors of the image's domain first, then the registry itself. */
static int add_endpoints(struct stream *s, const struct image_ref *ref)
{
	struct registry *r = s->r;
	const char *host = ref->domain;
	struct endpoint *e;

	for (size_t i = 0; i < r->nmirrors; i++) {
		if (strcasecmp(r->mirrors[i].domain, ref->domain))
			continue;
		e = &s->ep[s->nep];
		e->base = strdup(r->mirrors[i].base);
		if (!e->base)
			return -ENOMEM;
		url_host(e->base, e->host, sizeof(e->host));
		snprintf(e->cred_host, sizeof(e->cred_host), "%s", e->host);
		e->mirror = true;
		s->nep++;
	}
	if (!strcasecmp(host, "docker.io") || !strcasecmp(host, "index.docker.io"))
		host = "registry-1.docker.io";
	e = &s->ep[s->nep];
	e->base = xasprintf("%s://%s", is_insecure(r, host) ? "http" : "https", host);
	if (!e->base)
		return -ENOMEM;
	snprintf(e->host, sizeof(e->host), "%s", host);
	snprintf(e->cred_host, sizeof(e->cred_host), "%s", ref->domain);
	s->nep++;
	return 0;
}

/* A stream for /v2/<path>/<kind>/<reference> of ref. */
static int stream_for_ref(struct stream *s, struct registry *r,
			  const struct image_ref *ref, const char *kind,
			  const char *reference, struct daxfs_err *err)
{
	int rc = stream_init(s, r, r->nmirrors + 1, err);

	if (rc < 0)
		return rc;
	if (!ref->domain[0] || strpbrk(ref->domain, "/@?# "))
		return daxfs_err_set(err, -EINVAL, "bad registry host '%s'", ref->domain);
	if (!repo_path_ok(ref->path))
		return daxfs_err_set(err, -EINVAL, "registry %s: bad repository '%s'",
				     ref->domain, ref->path);
	s->rel = xasprintf("/v2/%s/%s/%s", ref->path, kind, reference);
	s->msg_path = s->rel ? strdup(s->rel) : NULL;
	s->scope = xasprintf("repository:%s:pull", ref->path);
	if (!s->rel || !s->msg_path || !s->scope || add_endpoints(s, ref) < 0)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	return 0;
}

/* ---- auth ---- */

/* One quoted or bare value at *p, unescaped into a new string. */
static char *param_value(const char **pp)
{
	const char *p = *pp;
	char *out = malloc(strlen(p) + 1), *o = out;

	if (!out)
		return NULL;
	if (*p == '"') {
		for (p++; *p && *p != '"'; p++) {
			if (*p == '\\' && p[1])
				p++;
			*o++ = *p;
		}
		if (*p)
			p++;
	} else {
		while (*p && *p != ',' && *p != ' ')
			*o++ = *p++;
	}
	*o = 0;
	*pp = p;
	return out;
}

/* Value of key in a challenge's parameter list:
 * realm="https://auth.docker.io/token",service="registry.docker.io" */
static char *challenge_param(const char *c, const char *key)
{
	const char *p = c, *name;
	size_t nl;
	char *v;

	while (*p) {
		p += strspn(p, " ,\t");
		name = p;
		nl = strcspn(p, "=, \t");
		p += nl;
		if (*p != '=')
			continue;
		p++;
		v = param_value(&p);
		if (!v || (nl == strlen(key) && !strncasecmp(name, key, nl)))
			return v;
		free(v);
	}
	return NULL;
}

static char *url_escape(const char *v)
{
	char *e = curl_easy_escape(NULL, v, 0), *out;

	if (!e)
		return NULL;
	out = strdup(e);
	curl_free(e);
	return out;
}

/* The token URL (GET) or form (POST refresh_token, for identity tokens). */
static int token_request(struct stream *t, const char *realm, const char *service,
			 const char *scope, const struct creds *c)
{
	char *sv = url_escape(service ? service : ""), *sc = url_escape(scope);
	char *rt = c->identity ? url_escape(c->identity) : NULL;
	const char *sep = strchr(realm, '?') ? "&" : "?";
	int rc = 0;

	if (!sv || !sc || (c->identity && !rt)) {
		rc = -ENOMEM;
	} else if (c->identity) {
		t->method = "POST";
		t->rel = strdup("");
		t->post = xasprintf("grant_type=refresh_token&client_id=daxfsd"
				    "&service=%s&scope=%s&refresh_token=%s", sv, sc, rt);
		rc = t->rel && t->post ? 0 : -ENOMEM;
	} else {
		t->rel = service ? xasprintf("%sservice=%s&scope=%s", sep, sv, sc) :
			 xasprintf("%sscope=%s", sep, sc);
		rc = t->rel ? 0 : -ENOMEM;
		if (!rc && c->user && c->pass) {
			t->token_auth = basic_auth(c->user, c->pass);
			rc = t->token_auth ? 0 : -ENOMEM;
		}
	}
	free(sv);
	free(sc);
	free(rt);
	return rc;
}

/* {"token": ..} or {"access_token": ..}, and how long it lasts (ms). */
static int token_parse(const char *body, size_t len, char **auth, uint64_t *ttl)
{
	json_t *root = json_loadb(body, len, 0, NULL);
	const char *tok;
	json_int_t exp;
	int rc = -EBADMSG;

	tok = json_string_value(json_object_get(root, "token"));
	if (!tok || !tok[0])
		tok = json_string_value(json_object_get(root, "access_token"));
	if (tok && tok[0]) {
		exp = json_integer_value(json_object_get(root, "expires_in"));
		if (exp <= 0)
			exp = TOKEN_TTL;
		/* Renew a little early so a request never races the expiry. */
		*ttl = (uint64_t)exp * 1000 - (exp > 20 ? 10000 : (uint64_t)exp * 500);
		*auth = xasprintf("Bearer %s", tok);
		rc = *auth ? 0 : -ENOMEM;
	}
	json_decref(root);
	return rc;
}

/* The realm may only be plain http where the registry itself is, or on a
 * host allowed to be insecure: it may receive credentials. */
static int token_endpoint(struct stream *s, struct stream *t, const char *realm,
			  struct daxfs_err *err)
{
	struct endpoint *e = &s->ep[s->cur];
	struct endpoint *te = &t->ep[0];
	const char *path;

	t->nep = 1;
	if ((strncmp(realm, "https://", 8) && strncmp(realm, "http://", 7)) ||
	    url_host(realm, te->host, sizeof(te->host)) < 0)
		return daxfs_err_set(err, -EPROTO, "registry %s: bad token realm '%s'",
				     e->host, realm);
	if (!strncmp(realm, "http://", 7) && strncmp(e->base, "http://", 7) &&
	    !is_insecure(s->r, te->host))
		return daxfs_err_set(err, -EPROTO,
				     "registry %s: refusing token realm over plain http: %s",
				     e->host, realm);
	/* Messages name the path only: the query is clutter. */
	path = strstr(realm, "://") + 3;
	path += strcspn(path, "/?#");
	te->base = strdup(realm);
	t->msg_path = path[0] == '/' ? strndup(path, strcspn(path, "?#")) : strdup("/");
	if (!te->base || !t->msg_path)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	return 0;
}

static int no_creds(struct daxfs_err *err, const struct endpoint *e)
{
	return daxfs_err_set(err, -EACCES,
			     "registry %s: authentication required (no credentials for %s)",
			     e->host, e->cred_host);
}

/* Fetch a bearer token for the challenge, with credentials if the docker
 * config has some.  *auth gets "Bearer <token>". */
static int fetch_token(struct stream *s, const struct creds *c, bool have,
		       char **auth, uint64_t *ttl, struct daxfs_err *err)
{
	const char *host = s->ep[s->cur].host;
	char *realm = challenge_param(s->bearer, "realm");
	char *service = challenge_param(s->bearer, "service");
	char *scope = challenge_param(s->bearer, "scope");
	struct stream t;
	char *body = NULL;
	size_t len;
	int rc;

	rc = stream_init(&t, s->r, 1, err);
	if (rc == 0 && !realm)
		rc = daxfs_err_set(err, -EPROTO, "registry %s: Bearer challenge without realm",
				   host);
	if (rc == 0)
		rc = token_endpoint(s, &t, realm, err);
	if (rc == 0 && token_request(&t, realm, service, scope ? scope : s->scope, c) < 0)
		rc = daxfs_err_set(err, -ENOMEM, "out of memory");
	if (rc == 0) {
		t.what = "token server";
		t.limit = TOKEN_MAX;
		rc = stream_slurp(&t, &body, &len, err);
		if (rc == -EACCES && !have)
			rc = no_creds(err, &s->ep[s->cur]);
		else if (rc < 0)
			daxfs_err_prefix(err, "registry %s", host);
	}
	if (rc == 0 && token_parse(body, len, auth, ttl) < 0)
		rc = daxfs_err_set(err, -EBADMSG, "token server %s: no token in the response",
				   t.ep[0].host);
	if (rc == 0)
		cache_put(s->r, host, scope ? scope : s->scope, *auth, *ttl);
	stream_free(&t);
	free(body);
	free(realm);
	free(service);
	free(scope);
	return rc;
}

/* New credentials for the challenge in the current response. */
static int authorize(struct stream *s, struct daxfs_err *err)
{
	struct endpoint *e = &s->ep[s->cur];
	struct creds c;
	uint64_t ttl;
	int rc;

	rc = creds_load(s->r, e->cred_host, &c, err);
	if (rc < 0 && rc != -ENOENT)
		return rc;
	if (s->bearer && c.regtoken) {
		s->auth = xasprintf("Bearer %s", c.regtoken);
		rc = s->auth ? 0 : daxfs_err_set(err, -ENOMEM, "out of memory");
		if (rc == 0)
			cache_put(s->r, e->host, s->scope, s->auth, UINT64_MAX);
	} else if (s->bearer) {
		rc = fetch_token(s, &c, rc == 0, &s->auth, &ttl, err);
	} else if (s->basic && rc == 0 && c.user && c.pass) {
		s->auth = basic_auth(c.user, c.pass);
		rc = s->auth ? 0 : daxfs_err_set(err, -ENOMEM, "out of memory");
		if (rc == 0)
			cache_put(s->r, e->host, "", s->auth, UINT64_MAX);
	} else {
		rc = no_creds(err, e);
	}
	creds_free(&c);
	return rc;
}

/* A 401: try once more with fresh credentials for its challenge.  Ones
 * from the cache that were refused are dropped (an expired token). */
static int on_401(struct stream *s, const char *detail)
{
	const char *host = cur_host(s);
	int rc;

	if (s->auth) {
		cache_drop(s->r, host, s->auth);
		free(s->auth);
		s->auth = NULL;
	}
	if (s->auth_tries) {
		set_last(s, -EACCES, "%s; credentials rejected", detail);
		return give_up(s);
	}
	if (!s->bearer && !s->basic) {
		set_last(s, -EACCES, "%s without a usable challenge", detail);
		return give_up(s);
	}
	rc = authorize(s, &s->last);
	if (rc < 0)
		return give_up(s);
	s->auth_tries++;
	return 0;
}

/* ---- API ---- */

static bool is_digest(const char *s)
{
	if (strncmp(s, "sha256:", 7) || strlen(s) != 71)
		return false;
	for (int i = 7; i < 71; i++)
		if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
			return false;
	return true;
}

static bool tag_ok(const char *t)
{
	size_t l = strlen(t);

	if (!l || l > 128 || t[0] == '.' || t[0] == '-')
		return false;
	for (; *t; t++)
		if (!isalnum((unsigned char)*t) && !strchr("._-", *t))
			return false;
	return true;
}

/* Compare the body's sha256 with want ("sha256:<hex>"). */
static int check_digest(struct stream *s, const char *body, size_t len,
			const char *want, struct daxfs_err *err)
{
	uint8_t md[32];
	char hex[72];

	if (!EVP_Digest(body, len, md, NULL, EVP_sha256(), NULL))
		return daxfs_err_set(err, -ENOMEM, "sha256 unavailable");
	digest_hex(md, hex);
	if (strcmp(hex, want))
		return daxfs_err_set(err, -EBADMSG, "%s %s: %s %s: digest mismatch (got %s)",
				     s->what, cur_host(s), s->method, s->msg_path, hex);
	return 0;
}

int registry_get_manifest(struct registry *r, const struct image_ref *ref,
			  const char *reference, char **body, size_t *len,
			  char **content_type, struct daxfs_err *err)
{
	struct stream s;
	int rc;

	*body = NULL;
	*len = 0;
	*content_type = NULL;
	if (!reference || !reference[0])
		reference = ref->digest[0] ? ref->digest : ref->tag;
	if (strchr(reference, ':') ? !is_digest(reference) : !tag_ok(reference))
		return daxfs_err_set(err, -EINVAL, "registry %s: bad manifest reference '%s'",
				     ref->domain, reference);
	rc = stream_for_ref(&s, r, ref, "manifests", reference, err);
	if (rc == 0) {
		s.accept = MANIFEST_ACCEPT;
		s.limit = MANIFEST_MAX;
		rc = stream_slurp(&s, body, len, err);
	}
	if (rc == 0 && is_digest(reference))
		rc = check_digest(&s, *body, *len, reference, err);
	if (rc == 0) {
		*content_type = s.ctype;
		s.ctype = NULL;
	} else {
		free(*body);
		*body = NULL;
		*len = 0;
	}
	stream_free(&s);
	return rc;
}

int registry_get_blob(struct registry *r, const struct image_ref *ref,
		      const uint8_t digest[32], size_t max, char **body,
		      size_t *len, struct daxfs_err *err)
{
	struct stream s;
	char hex[72];
	int rc;

	*body = NULL;
	*len = 0;
	digest_hex(digest, hex);
	rc = stream_for_ref(&s, r, ref, "blobs", hex, err);
	if (rc == 0) {
		s.limit = max ? max : BLOB_MAX;
		rc = stream_slurp(&s, body, len, err);
	}
	if (rc == 0)
		rc = check_digest(&s, *body, *len, hex, err);
	if (rc < 0) {
		free(*body);
		*body = NULL;
		*len = 0;
	}
	stream_free(&s);
	return rc;
}

int registry_blob_open(struct registry *r, const struct image_ref *ref,
		       const uint8_t digest[32], uint64_t size,
		       struct registry_blob **out, struct daxfs_err *err)
{
	struct registry_blob *b;
	char hex[72];
	int rc;

	*out = NULL;
	b = malloc(sizeof(*b));
	if (!b)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	digest_hex(digest, hex);
	rc = stream_for_ref(&b->s, r, ref, "blobs", hex, err);
	if (rc == 0) {
		b->s.size = size;
		b->s.limit = size;
		b->s.limit_is_size = true;
		/* Wait for the response so that a missing blob or refused
		 * access is reported here rather than by the first read. */
		rc = stream_pump(&b->s, true, err);
	}
	if (rc < 0) {
		registry_blob_close(b);
		return rc;
	}
	*out = b;
	return 0;
}

ssize_t registry_blob_read(struct registry_blob *b, void *buf, size_t len,
			   struct daxfs_err *err)
{
	return stream_read(&b->s, buf, len, err);
}

void registry_blob_close(struct registry_blob *b)
{
	if (!b)
		return;
	stream_free(&b->s);
	free(b);
}
