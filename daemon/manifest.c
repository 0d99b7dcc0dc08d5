/* OCI / Docker manifests, indexes and image configs.
 *
 * Everything read from a registry is untrusted: every field used later is
 * type-checked here, every digest parsed and every size range-checked, so
 * the pull code can rely on the structs without looking at JSON again.
 * Unknown fields are ignored, as the specs require. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/utsname.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "manifest.h"
#include "ref.h"

#define MT_DOCKER_SCHEMA1 "application/vnd.docker.distribution.manifest.v1+json"
#define MT_DOCKER_SCHEMA1_SIGNED \
	"application/vnd.docker.distribution.manifest.v1+prettyjws"

/* ---- platforms ---- */

/* uname -m to GOARCH names, which is what image platforms use. */
static const struct {
	const char *machine, *arch, *variant;
} arch_map[] = {
	{ "x86_64", "amd64", "" },
	{ "amd64", "amd64", "" },
	{ "i386", "386", "" },
	{ "i486", "386", "" },
	{ "i586", "386", "" },
	{ "i686", "386", "" },
	{ "aarch64", "arm64", "v8" },
	{ "arm64", "arm64", "v8" },
	{ "armv5tel", "arm", "v5" },
	{ "armv6l", "arm", "v6" },
	{ "armv7l", "arm", "v7" },
	{ "armv8l", "arm", "v7" },	/* 32-bit userland on a 64-bit core */
	{ "loongarch64", "loong64", "" },
};

/* Truncating copy; callers check lengths first where it matters. */
static void copy_str(char *dst, size_t len, const char *src)
{
	size_t n = strnlen(src, len - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

void platform_host(struct platform *p)
{
	struct utsname u;
	const char *arch;

	memset(p, 0, sizeof(*p));
	copy_str(p->os, sizeof(p->os), "linux");
	/* uname, not the compiler's target: a 32-bit daemon on a 64-bit
	 * kernel should still pull images for the machine. */
	arch = uname(&u) == 0 ? u.machine : "unknown";
	for (size_t i = 0; i < sizeof(arch_map) / sizeof(arch_map[0]); i++)
		if (!strcmp(arch, arch_map[i].machine)) {
			copy_str(p->arch, sizeof(p->arch), arch_map[i].arch);
			copy_str(p->variant, sizeof(p->variant), arch_map[i].variant);
			return;
		}
	/* ppc64le, s390x, riscv64, ... are spelt the same in both. */
	copy_str(p->arch, sizeof(p->arch), arch);
}

static bool platform_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-';
}

/* Copy one '/'-separated field, lowercased; false if empty, too long or
 * odd characters. */
static bool platform_field(const char *s, size_t n, char *dst, size_t len)
{
	if (n == 0 || n >= len)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] - 'A' + 'a') : s[i];

		if (!platform_char_ok(c))
			return false;
		dst[i] = c;
	}
	dst[n] = '\0';
	return true;
}

int platform_parse(const char *s, struct platform *p, struct daxfs_err *err)
{
	char *dst[3] = { p->os, p->arch, p->variant };
	size_t len[3] = { sizeof(p->os), sizeof(p->arch), sizeof(p->variant) };
	const char *cur = s;
	int i;

	memset(p, 0, sizeof(*p));
	for (i = 0; cur && i < 3; i++) {
		const char *slash = strchr(cur, '/');
		size_t n = slash ? (size_t)(slash - cur) : strlen(cur);

		if (!platform_field(cur, n, dst[i], len[i]))
			break;
		cur = slash ? slash + 1 : NULL;
	}
	if (!s || cur || i < 2) {
		memset(p, 0, sizeof(*p));
		return daxfs_err_set(err, -EINVAL,
				     "bad platform \"%.100s\": want os/arch[/variant]",
				     s ? s : "");
	}
	/* Accept the uname spellings people type. */
	for (size_t k = 0; k < sizeof(arch_map) / sizeof(arch_map[0]); k++)
		if (!strcmp(p->arch, arch_map[k].machine) &&
		    strcmp(p->arch, arch_map[k].arch)) {
			copy_str(p->arch, sizeof(p->arch), arch_map[k].arch);
			if (!p->variant[0])
				copy_str(p->variant, sizeof(p->variant),
					 arch_map[k].variant);
			break;
		}
	return 0;
}

/* Spellings that mean the same platform: arm64 is always v8 (images say
 * "v8", "8" or nothing), and arm variants may lack the "v". */
static void platform_norm(const struct platform *in, struct platform *out)
{
	*out = *in;
	if (!strcmp(out->arch, "arm64") &&
	    (!out->variant[0] || !strcmp(out->variant, "8") ||
	     !strcmp(out->variant, "v8.0")))
		copy_str(out->variant, sizeof(out->variant), "v8");
	else if (!strcmp(out->arch, "arm") && out->variant[0] >= '5' &&
		 out->variant[0] <= '8' && !out->variant[1])
		snprintf(out->variant, sizeof(out->variant), "v%c", in->variant[0]);
}

/* 0 = no match, 1 = matches with the wanted variant unset, 2 = exact. */
static int platform_score(const struct platform *want,
			  const struct platform *have)
{
	struct platform w, h;

	platform_norm(want, &w);
	platform_norm(have, &h);
	if (strcmp(w.os, h.os) || strcmp(w.arch, h.arch))
		return 0;
	if (!strcmp(w.variant, h.variant))
		return 2;
	return w.variant[0] ? 0 : 1;
}

static void platform_string(const struct platform *p, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s%s%s", p->os, p->arch,
		 p->variant[0] ? "/" : "", p->variant);
}

/* ---- JSON helpers ---- */

__attribute__((format(printf, 2, 3)))
static int bad(struct daxfs_err *err, const char *fmt, ...)
{
	char why[sizeof(((struct daxfs_err *)0)->msg)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return daxfs_err_set(err, -EBADMSG, "%s", why);
}

static json_t *load(const char *what, const char *body, size_t len,
		    struct daxfs_err *err)
{
	json_error_t jerr;
	/* Duplicate keys are allowed, last one wins: that is what Go's
	 * encoding/json does, so docker and containerd read the same
	 * document we do. */
	json_t *root = json_loadb(body, len, 0, &jerr);

	if (!root) {
		daxfs_err_set(err, -EBADMSG, "%s is not valid JSON: %s at line %d",
			      what, jerr.text, jerr.line);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		bad(err, "%s is not a JSON object", what);
		return NULL;
	}
	return root;
}

/* Optional string member: NULL if absent, error if present but not a
 * string (*rc set). */
static const char *opt_string(json_t *obj, const char *key, const char *where,
			      int *rc, struct daxfs_err *err)
{
	json_t *v = json_object_get(obj, key);

	if (!v || json_is_null(v))
		return NULL;
	if (!json_is_string(v)) {
		*rc = bad(err, "%s%s%s is not a string", where, *where ? "." : "", key);
		return NULL;
	}
	return json_string_value(v);
}

/* Required string member copied into dst. */
static int get_string(json_t *obj, const char *key, const char *where,
		      char *dst, size_t len, struct daxfs_err *err)
{
	int rc = 0;
	const char *s = opt_string(obj, key, where, &rc, err);
	const char *dot = *where ? "." : "";

	if (rc < 0)
		return rc;
	if (!s)
		return bad(err, "%s%s%s is missing", where, dot, key);
	if (strlen(s) >= len)
		return bad(err, "%s%s%s is too long", where, dot, key);
	copy_str(dst, len, s);
	return 0;
}

static int get_digest(json_t *obj, const char *where, uint8_t out[32],
		      struct daxfs_err *err)
{
	int rc = 0;
	const char *s = opt_string(obj, "digest", where, &rc, err);

	if (rc < 0)
		return rc;
	if (!s)
		return bad(err, "%s.digest is missing", where);
	if (digest_parse(s, out) < 0)
		return bad(err, "%s.digest \"%.80s\" is not sha256:<64 lowercase hex>",
			   where, s);
	return 0;
}

static int parse_descriptor(json_t *j, const char *where, struct descriptor *d,
			    struct daxfs_err *err)
{
	json_t *size;
	int rc;

	memset(d, 0, sizeof(*d));
	if (!j)
		return bad(err, "%s is missing", where);
	if (!json_is_object(j))
		return bad(err, "%s is not an object", where);
	rc = get_string(j, "mediaType", where, d->media_type,
			sizeof(d->media_type), err);
	if (rc == 0)
		rc = get_digest(j, where, d->digest, err);
	if (rc < 0)
		return rc;
	/* jansson keeps integers and reals apart and fails on overflow, so
	 * this rejects 1.5, "12", 1e3 and negatives. */
	size = json_object_get(j, "size");
	if (!json_is_integer(size) || json_integer_value(size) < 0)
		return bad(err, "%s.size is missing or not a non-negative integer",
			   where);
	d->size = (uint64_t)json_integer_value(size);
	return 0;
}

/* ---- manifests ---- */

enum mt_class { MTC_NONE, MTC_IMAGE, MTC_INDEX, MTC_SCHEMA1, MTC_OTHER };

static enum mt_class classify(const char *mt)
{
	if (!mt || !*mt)
		return MTC_NONE;
	if (!strcmp(mt, MT_OCI_MANIFEST) || !strcmp(mt, MT_DOCKER_MANIFEST))
		return MTC_IMAGE;
	if (!strcmp(mt, MT_OCI_INDEX) || !strcmp(mt, MT_DOCKER_LIST))
		return MTC_INDEX;
	if (!strcmp(mt, MT_DOCKER_SCHEMA1) || !strcmp(mt, MT_DOCKER_SCHEMA1_SIGNED))
		return MTC_SCHEMA1;
	return MTC_OTHER;
}

/* The Content-Type's bare media type, lowercased (RFC 6838 makes it
 * case-insensitive), or "" when it says nothing about the format. */
static void header_type(const char *ct, char *buf, size_t len)
{
	static const char *const generic[] = {
		"application/json", "text/plain", "application/octet-stream",
	};
	size_t n = 0;

	buf[0] = '\0';
	if (!ct)
		return;
	ct += strspn(ct, " \t");
	while (ct[n] && ct[n] != ';' && ct[n] != ' ' && ct[n] != '\t' &&
	       n + 1 < len) {
		char c = ct[n];

		buf[n++] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
	}
	buf[n] = '\0';
	for (size_t i = 0; i < sizeof(generic) / sizeof(generic[0]); i++)
		if (!strcmp(buf, generic[i]))
			buf[0] = '\0';
}

/* Old OCI images may omit mediaType; containerd then goes by shape. */
static const char *guess_type(json_t *root)
{
	if (json_object_get(root, "manifests"))
		return MT_OCI_INDEX;
	if (json_object_get(root, "config") || json_object_get(root, "layers"))
		return MT_OCI_MANIFEST;
	return NULL;
}

static bool is_schema1(json_t *root, const char *body_mt, const char *ct)
{
	json_t *sv = json_object_get(root, "schemaVersion");

	return (json_is_integer(sv) && json_integer_value(sv) == 1) ||
	       json_object_get(root, "fsLayers") ||
	       classify(body_mt) == MTC_SCHEMA1 || classify(ct) == MTC_SCHEMA1;
}

/* A document whose shape contradicts its type could be read as the other
 * kind by another client; containerd refuses these too. */
static int check_shape(json_t *root, enum mt_class cls, const char *type,
		       struct daxfs_err *err)
{
	json_t *sv = json_object_get(root, "schemaVersion");

	if (!json_is_integer(sv) || json_integer_value(sv) != 2)
		return bad(err, "schemaVersion is missing or not 2");
	if (cls == MTC_IMAGE && json_object_get(root, "manifests"))
		return bad(err, "%s has a manifests list", type);
	if (cls == MTC_INDEX && (json_object_get(root, "config") ||
				 json_object_get(root, "layers")))
		return bad(err, "%s has config or layers", type);
	return 0;
}

/* Decide what the document is: returns MANIFEST_IMAGE or MANIFEST_INDEX
 * and copies the media type to mt, or -errno.  The body's mediaType is
 * covered by the digest, the Content-Type is not, so the body wins. */
static int manifest_type(json_t *root, const char *content_type, char *mt,
			 size_t mtlen, struct daxfs_err *err)
{
	char ct[128];
	int rc = 0;
	const char *body_mt = opt_string(root, "mediaType", "", &rc, err);
	const char *type;
	enum mt_class cls, ct_cls;

	if (rc < 0)
		return rc;
	header_type(content_type, ct, sizeof(ct));
	if (is_schema1(root, body_mt, ct))
		return daxfs_err_set(err, -EPROTONOSUPPORT,
				     "Docker schema 1 manifest (%s) is not supported; push the image again with a current client",
				     body_mt ? body_mt : ct[0] ? ct : MT_DOCKER_SCHEMA1);
	type = body_mt ? body_mt : ct[0] ? ct : guess_type(root);
	if (!type)
		return bad(err, "manifest has no mediaType and is neither an image manifest nor an index");
	cls = classify(type);
	if (cls != MTC_IMAGE && cls != MTC_INDEX)
		return daxfs_err_set(err, -EPROTONOSUPPORT,
				     "unsupported manifest media type \"%.200s\"", type);
	ct_cls = classify(ct);
	if (body_mt && (ct_cls == MTC_IMAGE || ct_cls == MTC_INDEX) && ct_cls != cls)
		return bad(err, "Content-Type %s contradicts the manifest's mediaType %s",
			   ct, body_mt);
	rc = check_shape(root, cls, type, err);
	if (rc < 0)
		return rc;
	copy_str(mt, mtlen, type);
	return cls == MTC_IMAGE ? MANIFEST_IMAGE : MANIFEST_INDEX;
}

static int parse_image(json_t *root, struct manifest *m, struct daxfs_err *err)
{
	json_t *layers = json_object_get(root, "layers");
	size_t n;
	int rc;

	rc = parse_descriptor(json_object_get(root, "config"), "config",
			      &m->config, err);
	if (rc < 0)
		return rc;
	/* Artifacts (helm charts, signatures) reuse the image manifest with
	 * their own config type; say so now rather than fail on the config. */
	if (strcmp(m->config.media_type, MT_OCI_CONFIG) &&
	    strcmp(m->config.media_type, MT_DOCKER_CONFIG))
		return daxfs_err_set(err, -EPROTONOSUPPORT,
				     "config media type \"%s\" is not a container image config",
				     m->config.media_type);
	if (!json_is_array(layers))
		return bad(err, "layers is missing or not an array");
	n = json_array_size(layers);
	if (n) {
		m->layers = calloc(n, sizeof(*m->layers));
		if (!m->layers)
			return daxfs_err_set(err, -ENOMEM, "out of memory for %zu layers", n);
	}
	/* Layer media types are left to the unpacker, which knows which
	 * compressions it can undo. */
	for (size_t i = 0; i < n; i++) {
		char where[32];

		snprintf(where, sizeof(where), "layers[%zu]", i);
		rc = parse_descriptor(json_array_get(layers, i), where,
				      &m->layers[i], err);
		if (rc < 0)
			return rc;
		m->nlayers = i + 1;
	}
	return 0;
}

/* An index entry's platform; *has = false when it names none. */
static int entry_platform(json_t *entry, const char *where, struct platform *p,
			  bool *has, struct daxfs_err *err)
{
	json_t *pj = json_object_get(entry, "platform");
	char pw[48];
	int rc = 0;
	const char *variant;

	memset(p, 0, sizeof(*p));
	*has = pj != NULL;
	if (!pj)
		return 0;
	snprintf(pw, sizeof(pw), "%s.platform", where);
	if (!json_is_object(pj))
		return bad(err, "%s is not an object", pw);
	rc = get_string(pj, "os", pw, p->os, sizeof(p->os), err);
	if (rc == 0)
		rc = get_string(pj, "architecture", pw, p->arch, sizeof(p->arch), err);
	if (rc < 0)
		return rc;
	variant = opt_string(pj, "variant", pw, &rc, err);
	if (rc < 0)
		return rc;
	if (variant && strlen(variant) >= sizeof(p->variant))
		return bad(err, "%s.variant is too long", pw);
	copy_str(p->variant, sizeof(p->variant), variant ? variant : "");
	return 0;
}

/* Append item to a ", "-separated list, ending it with "..." once full. */
static void list_add(char *list, size_t len, const char *item)
{
	size_t used = strlen(list);
	size_t need = strlen(item) + (used ? 2 : 0);

	if (used >= 3 && !strcmp(list + used - 3, "..."))
		return;
	if (used + need + 5 >= len) {	/* keep room for ", ..." */
		snprintf(list + used, len - used, "%s...", used ? ", " : "");
		return;
	}
	snprintf(list + used, len - used, "%s%s", used ? ", " : "", item);
}

/* Scores: 3 exact platform, 2 platform with the wanted variant unset,
 * 1 no platform at all (containerd's last resort), 0 no match. */
static int entry_score(json_t *entry, const char *where,
		       const struct descriptor *d, const struct platform *want,
		       char *list, size_t len, struct daxfs_err *err)
{
	struct platform p;
	char name[100];
	bool has;
	int rc, cls = classify(d->media_type);

	rc = entry_platform(entry, where, &p, &has, err);
	if (rc < 0)
		return rc;
	if (cls != MTC_IMAGE && cls != MTC_INDEX)
		return 0;	/* attestations, artifacts */
	if (!has)
		return 1;
	/* buildx attaches attestations as unknown/unknown: not worth listing. */
	if (strcmp(p.os, "unknown")) {
		platform_string(&p, name, sizeof(name));
		list_add(list, len, name);
	}
	rc = platform_score(want, &p);
	return rc ? rc + 1 : 0;
}

static int parse_index(json_t *root, const struct platform *want,
		       struct manifest *m, struct daxfs_err *err)
{
	json_t *manifests = json_object_get(root, "manifests");
	char list[320] = "", wname[100];
	int best = 0;

	if (!json_is_array(manifests))
		return bad(err, "manifests is missing or not an array");
	/* Every entry is checked, not just up to the match, so a corrupt
	 * index fails the same way on every host. */
	for (size_t i = 0; i < json_array_size(manifests); i++) {
		json_t *entry = json_array_get(manifests, i);
		struct descriptor d;
		char where[32];
		int score;

		snprintf(where, sizeof(where), "manifests[%zu]", i);
		score = parse_descriptor(entry, where, &d, err);
		if (score == 0)
			score = entry_score(entry, where, &d, want, list,
					    sizeof(list), err);
		if (score < 0)
			return score;
		if (score > best) {
			best = score;
			m->chosen = d;
		}
	}
	if (best)
		return 0;
	platform_string(want, wname, sizeof(wname));
	return daxfs_err_set(err, -ENOENT, "no manifest for %s in the index (it has %s)",
			     wname, list[0] ? list : "no platforms");
}

int manifest_parse(const char *body, size_t len, const char *content_type,
		   const struct platform *plat, struct manifest *out,
		   struct daxfs_err *err)
{
	struct platform host;
	json_t *root;
	int rc;

	memset(out, 0, sizeof(*out));
	root = load("manifest", body, len, err);
	if (!root)
		return -EBADMSG;
	if (!plat) {
		platform_host(&host);
		plat = &host;
	}
	rc = manifest_type(root, content_type, out->media_type,
			   sizeof(out->media_type), err);
	if (rc > 0) {
		out->kind = (enum manifest_kind)rc;
		if (rc == MANIFEST_IMAGE)
			rc = parse_image(root, out, err);
		else
			rc = parse_index(root, plat, out, err);
	}
	json_decref(root);
	if (rc < 0)
		manifest_free(out);
	return rc;
}

void manifest_free(struct manifest *m)
{
	if (!m)
		return;
	free(m->layers);
	memset(m, 0, sizeof(*m));
}

/* ---- image configs ---- */

static int config_platform(json_t *root, struct platform *p,
			   struct daxfs_err *err)
{
	int rc = get_string(root, "os", "", p->os, sizeof(p->os), err);
	const char *variant;

	if (rc == 0)
		rc = get_string(root, "architecture", "", p->arch,
				sizeof(p->arch), err);
	if (rc < 0)
		return rc;
	variant = opt_string(root, "variant", "", &rc, err);
	if (rc < 0)
		return rc;
	if (variant && strlen(variant) >= sizeof(p->variant))
		return bad(err, "variant is too long");
	copy_str(p->variant, sizeof(p->variant), variant ? variant : "");
	return 0;
}

static int config_rootfs(json_t *root, struct image_config *c,
			 struct daxfs_err *err)
{
	json_t *rootfs = json_object_get(root, "rootfs"), *ids;
	char type[32];
	size_t n;
	int rc;

	if (!json_is_object(rootfs))
		return bad(err, "rootfs is missing or not an object");
	rc = get_string(rootfs, "type", "rootfs", type, sizeof(type), err);
	if (rc < 0)
		return rc;
	if (strcmp(type, "layers"))
		return bad(err, "rootfs.type is \"%s\", want \"layers\"", type);
	ids = json_object_get(rootfs, "diff_ids");
	if (!json_is_array(ids))
		return bad(err, "rootfs.diff_ids is missing or not an array");
	n = json_array_size(ids);
	if (n) {
		c->diff_ids = calloc(n, 32);
		if (!c->diff_ids)
			return daxfs_err_set(err, -ENOMEM, "out of memory for %zu diff_ids", n);
	}
	for (size_t i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(ids, i));

		if (!s || digest_parse(s, c->diff_ids + 32 * i) < 0)
			return bad(err, "rootfs.diff_ids[%zu] \"%.80s\" is not sha256:<64 lowercase hex>",
				   i, s ? s : "(not a string)");
		c->ndiff_ids = i + 1;
	}
	return 0;
}

int config_parse(const char *body, size_t len, struct image_config *out,
		 struct daxfs_err *err)
{
	json_t *root;
	int rc;

	memset(out, 0, sizeof(*out));
	root = load("image config", body, len, err);
	if (!root)
		return -EBADMSG;
	rc = config_platform(root, &out->plat, err);
	if (rc == 0)
		rc = config_rootfs(root, out, err);
	json_decref(root);
	if (rc < 0)
		config_free(out);
	return rc;
}

void config_free(struct image_config *c)
{
	if (!c)
		return;
	free(c->diff_ids);
	memset(c, 0, sizeof(*c));
}

/* ---- chain IDs ---- */

/* out may be diff_ids itself: each step reads diff_id[i] before it
 * overwrites that slot. */
int chain_ids(const uint8_t *diff_ids, size_t n, uint8_t *out)
{
	char a[72], b[72], buf[2 * 71 + 2];

	if (n == 0)
		return 0;
	memmove(out, diff_ids, 32);
	for (size_t i = 1; i < n; i++) {
		uint8_t h[32];
		int len;

		digest_format(out + 32 * (i - 1), a);
		digest_format(diff_ids + 32 * i, b);
		len = snprintf(buf, sizeof(buf), "%s %s", a, b);
		if (!EVP_Digest(buf, (size_t)len, h, NULL, EVP_sha256(), NULL))
			return -ENOMEM;
		memcpy(out + 32 * i, h, 32);
	}
	return 0;
}
