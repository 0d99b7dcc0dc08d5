/* Manifests, indexes, image configs and chain IDs. */
#include <errno.h>
#include <stdarg.h>

#include <openssl/evp.h>

#include "check.h"
#include "manifest.h"
#include "ref.h"

#define X8(c) c c c c c c c c
#define HEX(c) X8(X8(c))
#define DG(c) "sha256:" HEX(c)

#define LAYER_GZ "application/vnd.oci.image.layer.v1.tar+gzip"
#define DOCKER_LAYER "application/vnd.docker.image.rootfs.diff.tar.gzip"

static const char oci_image[] =
	"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST "\","
	"\"config\":{\"mediaType\":\"" MT_OCI_CONFIG "\","
	"\"digest\":\"" DG("c") "\",\"size\":1234},"
	"\"layers\":["
	"{\"mediaType\":\"" LAYER_GZ "\",\"digest\":\"" DG("1") "\",\"size\":100},"
	"{\"mediaType\":\"" LAYER_GZ "\",\"digest\":\"" DG("2") "\","
	"\"size\":4294967296,\"annotations\":{\"a\":\"b\"}}],"
	"\"annotations\":{\"org.opencontainers.image.created\":\"now\"}}";

static const char docker_image[] =
	"{\"schemaVersion\":2,\"mediaType\":\"" MT_DOCKER_MANIFEST "\","
	"\"config\":{\"mediaType\":\"" MT_DOCKER_CONFIG "\","
	"\"digest\":\"" DG("c") "\",\"size\":7},"
	"\"layers\":[{\"mediaType\":\"" DOCKER_LAYER "\","
	"\"digest\":\"" DG("3") "\",\"size\":0}]}";

#define PLAT(os, arch) "{\"os\":\"" os "\",\"architecture\":\"" arch "\"}"
#define PLATV(os, arch, v) \
	"{\"os\":\"" os "\",\"architecture\":\"" arch "\",\"variant\":\"" v "\"}"
#define ENTRY(mt, dg, plat) \
	"{\"mediaType\":\"" mt "\",\"digest\":\"" dg "\",\"size\":500," \
	"\"platform\":" plat "}"

/* amd64/v2 comes first so that the plain amd64 entry is only chosen if
 * exact variant matches are preferred. */
static const char oci_index[] =
	"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX "\",\"manifests\":["
	ENTRY(MT_OCI_MANIFEST, DG("a"), PLATV("linux", "amd64", "v2")) ","
	ENTRY(MT_OCI_MANIFEST, DG("b"), PLAT("linux", "amd64")) ","
	ENTRY(MT_OCI_MANIFEST, DG("d"), PLATV("linux", "arm64", "v8")) ","
	ENTRY(MT_OCI_MANIFEST, DG("e"), PLATV("linux", "arm", "v7")) ","
	ENTRY(MT_OCI_MANIFEST, DG("f"), PLAT("unknown", "unknown")) "]}";

static const char docker_list[] =
	"{\"schemaVersion\":2,\"mediaType\":\"" MT_DOCKER_LIST "\",\"manifests\":["
	ENTRY(MT_DOCKER_MANIFEST, DG("4"), PLAT("linux", "arm64")) ","
	ENTRY(MT_DOCKER_MANIFEST, DG("5"), PLAT("linux", "amd64")) "]}";

/* s with the first occurrence of from replaced by to; malloc'd. */
static char *subst(const char *s, const char *from, const char *to)
{
	const char *at = strstr(s, from);
	size_t n = strlen(s) - strlen(from) + strlen(to) + 1;
	char *out = malloc(n);

	if (!at || !out) {
		fprintf(stderr, "subst: \"%s\" not found\n", from);
		abort();
	}
	snprintf(out, n, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
	return out;
}

static int parse(const char *body, const char *ct, const char *plat,
		 struct manifest *m, struct daxfs_err *err)
{
	struct platform p;

	memset(m, 0, sizeof(*m));
	if (platform_parse(plat ? plat : "linux/amd64", &p, err) < 0)
		return -999;
	return manifest_parse(body, strlen(body), ct, &p, m, err);
}

static int digest_is(const uint8_t d[32], const char *want)
{
	char s[72];

	digest_format(d, s);
	if (strcmp(s, want)) {
		fprintf(stderr, "digest %s, want %s\n", s, want);
		return 0;
	}
	return 1;
}

/* body must fail with rc and a message containing each of the strings
 * after it (NULL-terminated), and leave m empty. */
static int parse_fails(const char *body, const char *ct, const char *plat,
		       int rc, ...)
{
	struct manifest m;
	struct daxfs_err err = { 0 };
	int got = parse(body, ct, plat, &m, &err);
	const char *want;
	va_list ap;
	int ok = got == rc && err.code == -rc && !m.layers && !m.nlayers;

	va_start(ap, rc);
	while ((want = va_arg(ap, const char *)))
		if (!strstr(err.msg, want))
			ok = 0;
	va_end(ap);
	if (!ok)
		fprintf(stderr, "parse gave %d \"%s\", want %d\n", got, err.msg, rc);
	manifest_free(&m);
	return ok;
}

/* Like parse_fails, for a body made by subst (freed here). */
static int variant_fails(char *body, int rc, const char *why)
{
	int ok = parse_fails(body, NULL, NULL, rc, why, (char *)NULL);

	free(body);
	return ok;
}

TEST(oci_image)
{
	struct manifest m;
	struct daxfs_err err = { 0 };

	CHECK_RC(parse(oci_image, NULL, NULL, &m, &err), 0);
	CHECK(m.kind == MANIFEST_IMAGE);
	CHECK(!strcmp(m.media_type, MT_OCI_MANIFEST));
	CHECK(!strcmp(m.config.media_type, MT_OCI_CONFIG));
	CHECK(digest_is(m.config.digest, DG("c")) && m.config.size == 1234);
	CHECK(m.nlayers == 2);
	CHECK(!strcmp(m.layers[0].media_type, LAYER_GZ));
	CHECK(digest_is(m.layers[0].digest, DG("1")) && m.layers[0].size == 100);
	CHECK(digest_is(m.layers[1].digest, DG("2")));
	CHECK(m.layers[1].size == 4294967296ull);
	manifest_free(&m);
	CHECK(!m.layers && !m.nlayers);

	/* The registry's header, parameters and case notwithstanding. */
	CHECK_RC(parse(oci_image, "Application/vnd.oci.image.manifest.v1+json; charset=utf-8",
		       NULL, &m, &err), 0);
	CHECK(m.kind == MANIFEST_IMAGE && m.nlayers == 2);
	manifest_free(&m);
	CHECK_RC(parse(oci_image, "application/json", NULL, &m, &err), 0);
	manifest_free(&m);
}

TEST(docker_image)
{
	struct manifest m;
	struct daxfs_err err = { 0 };

	CHECK_RC(parse(docker_image, MT_DOCKER_MANIFEST, NULL, &m, &err), 0);
	CHECK(m.kind == MANIFEST_IMAGE);
	CHECK(!strcmp(m.media_type, MT_DOCKER_MANIFEST));
	CHECK(!strcmp(m.config.media_type, MT_DOCKER_CONFIG));
	CHECK(m.config.size == 7 && m.nlayers == 1);
	CHECK(!strcmp(m.layers[0].media_type, DOCKER_LAYER));
	CHECK(digest_is(m.layers[0].digest, DG("3")) && m.layers[0].size == 0);
	manifest_free(&m);
	manifest_free(&m);	/* idempotent */
}

TEST(no_media_type_in_body)
{
	struct manifest m;
	struct daxfs_err err = { 0 };
	char *body = subst(oci_image, "\"mediaType\":\"" MT_OCI_MANIFEST "\",", "");
	int rc;

	/* The header decides... */
	rc = parse(body, MT_OCI_MANIFEST, NULL, &m, &err);
	if (rc == 0)
		CHECK(!strcmp(m.media_type, MT_OCI_MANIFEST) && m.nlayers == 2);
	manifest_free(&m);
	/* ...or, with no useful header, the document's shape. */
	if (rc == 0)
		rc = parse(body, NULL, NULL, &m, &err);
	if (rc == 0)
		CHECK(m.kind == MANIFEST_IMAGE && m.nlayers == 2);
	manifest_free(&m);
	free(body);
	CHECK_RC(rc, 0);
}

TEST(oci_index_picks_platform)
{
	struct manifest m;
	struct daxfs_err err = { 0 };

	CHECK_RC(parse(oci_index, MT_OCI_INDEX, "linux/amd64", &m, &err), 0);
	CHECK(m.kind == MANIFEST_INDEX);
	CHECK(!strcmp(m.media_type, MT_OCI_INDEX));
	CHECK(!m.layers && !m.nlayers);
	CHECK(digest_is(m.chosen.digest, DG("b")));
	CHECK(!strcmp(m.chosen.media_type, MT_OCI_MANIFEST) && m.chosen.size == 500);
	manifest_free(&m);

	CHECK_RC(parse(oci_index, NULL, "linux/amd64/v2", &m, &err), 0);
	CHECK(digest_is(m.chosen.digest, DG("a")));
	CHECK_RC(parse(oci_index, NULL, "linux/arm64/v8", &m, &err), 0);
	CHECK(digest_is(m.chosen.digest, DG("d")));
	CHECK_RC(parse(oci_index, NULL, "linux/arm64", &m, &err), 0);
	CHECK(digest_is(m.chosen.digest, DG("d")));
	CHECK_RC(parse(oci_index, NULL, "linux/aarch64", &m, &err), 0);
	CHECK(digest_is(m.chosen.digest, DG("d")));
	CHECK_RC(parse(oci_index, NULL, "linux/arm/v7", &m, &err), 0);
	CHECK(digest_is(m.chosen.digest, DG("e")));
	CHECK_RC(parse(oci_index, NULL, "linux/arm/7", &m, &err), 0);
	CHECK(digest_is(m.chosen.digest, DG("e")));
	manifest_free(&m);
}

TEST(oci_index_no_match)
{
	CHECK(parse_fails(oci_index, NULL, "linux/s390x", -ENOENT,
			  "linux/s390x", "linux/amd64/v2, linux/amd64, "
			  "linux/arm64/v8, linux/arm/v7)", (char *)NULL));
	CHECK(parse_fails(oci_index, NULL, "linux/arm/v6", -ENOENT,
			  "no manifest for linux/arm/v6", (char *)NULL));
	CHECK(parse_fails(oci_index, NULL, "windows/amd64", -ENOENT,
			  "windows/amd64", (char *)NULL));
}

TEST(arm64_variant_defaults)
{
	static const char idx[] =
		"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX "\",\"manifests\":["
		ENTRY(MT_OCI_MANIFEST, DG("a"), PLATV("linux", "arm64", "v9")) ","
		ENTRY(MT_OCI_MANIFEST, DG("b"), PLAT("linux", "arm64")) "]}";
	struct manifest m;
	struct daxfs_err err = { 0 };

	/* A missing variant on arm64 means v8, and wins over v9. */
	CHECK_RC(parse(idx, NULL, "linux/arm64/v8", &m, &err), 0);
	CHECK(digest_is(m.chosen.digest, DG("b")));
	CHECK_RC(parse(idx, NULL, "linux/arm64", &m, &err), 0);
	CHECK(digest_is(m.chosen.digest, DG("b")));
	CHECK_RC(parse(idx, NULL, "linux/arm64/v9", &m, &err), 0);
	CHECK(digest_is(m.chosen.digest, DG("a")));
	manifest_free(&m);
}

TEST(wildcard_variant)
{
	static const char idx[] =
		"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX "\",\"manifests\":["
		ENTRY(MT_OCI_MANIFEST, DG("a"), PLATV("linux", "arm", "v6")) ","
		ENTRY(MT_OCI_MANIFEST, DG("b"), PLATV("linux", "arm", "v7")) "]}";
	struct manifest m;
	struct daxfs_err err = { 0 };

	/* No wanted variant: the first entry for the architecture. */
	CHECK_RC(parse(idx, NULL, "linux/arm", &m, &err), 0);
	CHECK(digest_is(m.chosen.digest, DG("a")));
	CHECK_RC(parse(idx, NULL, "linux/arm/v7", &m, &err), 0);
	CHECK(digest_is(m.chosen.digest, DG("b")));
	manifest_free(&m);
}

TEST(docker_list)
{
	struct manifest m;
	struct daxfs_err err = { 0 };

	CHECK_RC(parse(docker_list, MT_DOCKER_LIST, "linux/amd64", &m, &err), 0);
	CHECK(m.kind == MANIFEST_INDEX && !strcmp(m.media_type, MT_DOCKER_LIST));
	CHECK(digest_is(m.chosen.digest, DG("5")));
	CHECK(!strcmp(m.chosen.media_type, MT_DOCKER_MANIFEST));
	CHECK_RC(parse(docker_list, MT_DOCKER_LIST, "linux/arm64/v8", &m, &err), 0);
	CHECK(digest_is(m.chosen.digest, DG("4")));
	manifest_free(&m);
}

TEST(index_entry_without_platform)
{
	static const char idx[] =
		"{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\""
		MT_OCI_MANIFEST "\",\"digest\":\"" DG("9") "\",\"size\":3}]}";
	struct manifest m;
	struct daxfs_err err = { 0 };

	/* Also shows an index recognised by shape alone. */
	CHECK_RC(parse(idx, NULL, "linux/riscv64", &m, &err), 0);
	CHECK(m.kind == MANIFEST_INDEX && !strcmp(m.media_type, MT_OCI_INDEX));
	CHECK(digest_is(m.chosen.digest, DG("9")));
	manifest_free(&m);
}

TEST(not_json)
{
	CHECK(parse_fails("{\"schemaVersion\":2,\n\"layers\":[}", NULL, NULL,
			  -EBADMSG, "manifest is not valid JSON: ", " at line 2",
			  (char *)NULL));
	CHECK(parse_fails("", NULL, NULL, -EBADMSG, "not valid JSON", (char *)NULL));
	CHECK(parse_fails("[1,2]", NULL, NULL, -EBADMSG, "not a JSON object",
			  (char *)NULL));
	CHECK(parse_fails("{}", NULL, NULL, -EBADMSG,
			  "neither an image manifest nor an index", (char *)NULL));
}

TEST(malformed_image)
{
	CHECK(variant_fails(subst(oci_image, "\"layers\"", "\"lairs\""),
			    -EBADMSG, "layers is missing"));
	CHECK(variant_fails(subst(oci_image, "\"layers\":[", "\"layers\":{},\"x\":["),
			    -EBADMSG, "layers is missing or not an array"));
	CHECK(variant_fails(subst(oci_image, DG("2"), "sha256:abc"),
			    -EBADMSG, "layers[1].digest \"sha256:abc\""));
	CHECK(variant_fails(subst(oci_image, DG("1"), "sha256:" HEX("A")),
			    -EBADMSG, "layers[0].digest"));
	CHECK(variant_fails(subst(oci_image, DG("c"), "md5:00"),
			    -EBADMSG, "config.digest \"md5:00\""));
	CHECK(variant_fails(subst(oci_image, "\"digest\":\"" DG("c") "\",", ""),
			    -EBADMSG, "config.digest is missing"));
	CHECK(variant_fails(subst(oci_image, "\"size\":100", "\"size\":-1"),
			    -EBADMSG, "layers[0].size"));
	CHECK(variant_fails(subst(oci_image, "\"size\":100", "\"size\":1.5"),
			    -EBADMSG, "layers[0].size"));
	CHECK(variant_fails(subst(oci_image, "\"size\":100", "\"size\":\"100\""),
			    -EBADMSG, "layers[0].size"));
	CHECK(variant_fails(subst(oci_image, "\"size\":100", "\"size\":1e3"),
			    -EBADMSG, "layers[0].size"));
	CHECK(variant_fails(subst(oci_image, ",\"size\":100", ""),
			    -EBADMSG, "layers[0].size"));
	CHECK(variant_fails(subst(oci_image, "\"mediaType\":\"" LAYER_GZ "\",", ""),
			    -EBADMSG, "layers[0].mediaType is missing"));
	CHECK(variant_fails(subst(oci_image, "\"config\":{", "\"konfig\":{"),
			    -EBADMSG, "config is missing"));
	CHECK(variant_fails(subst(oci_image, "\"schemaVersion\":2", "\"schemaVersion\":3"),
			    -EBADMSG, "schemaVersion"));
	CHECK(variant_fails(subst(oci_image, "\"mediaType\":\"" MT_OCI_MANIFEST "\"",
				  "\"mediaType\":7"),
			    -EBADMSG, "mediaType is not a string"));
	/* An image manifest carrying an index's list is ambiguous. */
	CHECK(variant_fails(subst(oci_image, "\"layers\":", "\"manifests\":[],\"layers\":"),
			    -EBADMSG, "has a manifests list"));
}

TEST(malformed_index)
{
	/* A bad entry fails the index even when it is not the one chosen. */
	CHECK(variant_fails(subst(oci_index, DG("f"), "sha256:nothex"),
			    -EBADMSG, "manifests[4].digest"));
	CHECK(variant_fails(subst(oci_index, "\"size\":500", "\"size\":-500"),
			    -EBADMSG, "manifests[0].size"));
	CHECK(variant_fails(subst(oci_index, "\"manifests\"", "\"manifestz\""),
			    -EBADMSG, "manifests is missing or not an array"));
	CHECK(variant_fails(subst(oci_index, "\"manifests\":[", "\"layers\":[],\"manifests\":["),
			    -EBADMSG, "has config or layers"));
	CHECK(variant_fails(subst(oci_index, "\"architecture\":\"arm64\"", "\"architecture\":64"),
			    -EBADMSG, "manifests[2].platform.architecture is not a string"));
	CHECK(variant_fails(subst(oci_index, "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}",
				  "\"platform\":\"linux/amd64\""),
			    -EBADMSG, "manifests[1].platform is not an object"));
	CHECK(parse_fails(oci_index, MT_OCI_MANIFEST, NULL, -EBADMSG,
			  "contradicts", (char *)NULL));
}

TEST(unsupported_types)
{
	static const char schema1[] =
		"{\"schemaVersion\":1,\"name\":\"library/x\",\"tag\":\"1\","
		"\"architecture\":\"amd64\",\"fsLayers\":[{\"blobSum\":\"" DG("1") "\"}],"
		"\"history\":[],\"signatures\":[]}";
	static const char artifact_cfg[] = "application/vnd.cncf.helm.config.v1+json";
	char *body;

	CHECK(parse_fails(schema1, NULL, NULL, -EPROTONOSUPPORT, "schema 1",
			  (char *)NULL));
	CHECK(parse_fails(schema1,
			  "application/vnd.docker.distribution.manifest.v1+prettyjws",
			  NULL, -EPROTONOSUPPORT, "schema 1",
			  "manifest.v1+prettyjws", (char *)NULL));
	body = subst(docker_image, MT_DOCKER_MANIFEST,
		     "application/vnd.docker.distribution.manifest.v1+json");
	CHECK(variant_fails(body, -EPROTONOSUPPORT,
			    "schema 1 manifest (application/vnd.docker.distribution.manifest.v1+json)"));
	body = subst(oci_image, MT_OCI_MANIFEST, "application/vnd.example.thing+json");
	CHECK(variant_fails(body, -EPROTONOSUPPORT,
			    "unsupported manifest media type \"application/vnd.example.thing+json\""));
	CHECK(parse_fails("{\"schemaVersion\":2}", "application/vnd.example.other",
			  NULL, -EPROTONOSUPPORT, "application/vnd.example.other",
			  (char *)NULL));
	body = subst(oci_image, MT_OCI_CONFIG, artifact_cfg);
	CHECK(variant_fails(body, -EPROTONOSUPPORT, artifact_cfg));
}

TEST(platforms)
{
	struct platform p;
	struct daxfs_err err = { 0 };

	CHECK_RC(platform_parse("linux/amd64", &p, &err), 0);
	CHECK(!strcmp(p.os, "linux") && !strcmp(p.arch, "amd64") && !p.variant[0]);
	CHECK_RC(platform_parse("linux/arm64/v8", &p, &err), 0);
	CHECK(!strcmp(p.arch, "arm64") && !strcmp(p.variant, "v8"));
	CHECK_RC(platform_parse("Linux/x86_64", &p, &err), 0);
	CHECK(!strcmp(p.os, "linux") && !strcmp(p.arch, "amd64"));
	CHECK_RC(platform_parse("linux/armv7l", &p, &err), 0);
	CHECK(!strcmp(p.arch, "arm") && !strcmp(p.variant, "v7"));

	CHECK_RC(platform_parse("linux", &p, &err), -EINVAL);
	CHECK(strstr(err.msg, "os/arch[/variant]") && p.os[0] == '\0');
	CHECK_RC(platform_parse("linux/", &p, &err), -EINVAL);
	CHECK_RC(platform_parse("/amd64", &p, &err), -EINVAL);
	CHECK_RC(platform_parse("linux/amd64/", &p, &err), -EINVAL);
	CHECK_RC(platform_parse("linux/arm/v7/x", &p, &err), -EINVAL);
	CHECK_RC(platform_parse("linux/am d64", &p, &err), -EINVAL);
	CHECK_RC(platform_parse("", &p, &err), -EINVAL);
	CHECK_RC(platform_parse(NULL, &p, &err), -EINVAL);
	CHECK_RC(platform_parse("linux/" X8("abcd"), &p, &err), -EINVAL);
}

TEST(host_platform)
{
	struct platform p;

	platform_host(&p);
	CHECK(!strcmp(p.os, "linux") && p.arch[0]);
#if defined(__x86_64__)
	CHECK(!strcmp(p.arch, "amd64") && !p.variant[0]);
#elif defined(__aarch64__)
	CHECK(!strcmp(p.arch, "arm64") && !strcmp(p.variant, "v8"));
#endif
}

static const char config_body[] =
	"{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\","
	"\"config\":{\"Env\":[\"PATH=/bin\"]},"
	"\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" DG("1") "\",\"" DG("2") "\"]},"
	"\"history\":[{\"created_by\":\"x\"}]}";

static int config_fails(char *body, int rc, const char *why)
{
	struct image_config c;
	struct daxfs_err err = { 0 };
	int got = config_parse(body, strlen(body), &c, &err);
	int ok = got == rc && strstr(err.msg, why) && !c.diff_ids && !c.ndiff_ids;

	if (!ok)
		fprintf(stderr, "config_parse gave %d \"%s\", want %d \"%s\"\n",
			got, err.msg, rc, why);
	free(body);
	return ok;
}

TEST(config)
{
	struct image_config c;
	struct daxfs_err err = { 0 };

	CHECK_RC(config_parse(config_body, strlen(config_body), &c, &err), 0);
	CHECK(c.ndiff_ids == 2);
	CHECK(digest_is(c.diff_ids, DG("1")) && digest_is(c.diff_ids + 32, DG("2")));
	CHECK(!strcmp(c.plat.os, "linux") && !strcmp(c.plat.arch, "arm64") &&
	      !strcmp(c.plat.variant, "v8"));
	config_free(&c);
	CHECK(!c.diff_ids && !c.ndiff_ids);
	config_free(&c);
}

TEST(config_malformed)
{
	CHECK(config_fails(subst(config_body, "{", "["), -EBADMSG,
			   "image config is not valid JSON: "));
	CHECK(config_fails(subst(config_body, "\"rootfs\"", "\"rootfz\""),
			   -EBADMSG, "rootfs is missing"));
	CHECK(config_fails(subst(config_body, "\"layers\"", "\"tarball\""),
			   -EBADMSG, "rootfs.type is \"tarball\""));
	CHECK(config_fails(subst(config_body, "\"type\":\"layers\",", ""),
			   -EBADMSG, "rootfs.type is missing"));
	CHECK(config_fails(subst(config_body, "\"diff_ids\"", "\"diffids\""),
			   -EBADMSG, "rootfs.diff_ids is missing"));
	CHECK(config_fails(subst(config_body, DG("2"), "sha256:12"),
			   -EBADMSG, "rootfs.diff_ids[1] \"sha256:12\""));
	CHECK(config_fails(subst(config_body, "\"" DG("1") "\"", "1"),
			   -EBADMSG, "rootfs.diff_ids[0]"));
	CHECK(config_fails(subst(config_body, "\"os\":\"linux\",", ""),
			   -EBADMSG, "os is missing"));
	CHECK(config_fails(subst(config_body, "\"arm64\"", "[]"),
			   -EBADMSG, "architecture is not a string"));
}

/* chain[i] computed here straight from the definition with EVP. */
static void chain_ref(const uint8_t *prev, const uint8_t *diff, uint8_t out[32])
{
	char a[72], b[72], buf[200];
	unsigned int len = 0;

	digest_format(prev, a);
	digest_format(diff, b);
	snprintf(buf, sizeof(buf), "%s %s", a, b);
	EVP_Digest(buf, strlen(buf), out, &len, EVP_sha256(), NULL);
}

TEST(chain_ids_known_vector)
{
	uint8_t ids[3 * 32], out[3 * 32];

	/* Values from "printf 'sha256:11..11 sha256:22..22' | sha256sum" and
	 * likewise for the next step. */
	memset(ids, 0x11, 32);
	memset(ids + 32, 0x22, 32);
	memset(ids + 64, 0x33, 32);
	CHECK_RC(chain_ids(ids, 3, out), 0);
	CHECK(!memcmp(out, ids, 32));
	CHECK(digest_is(out + 32, "sha256:9932074217c35353d2e03a3f5a86549f"
			"7c67bfeb0ba53e23d69f4d4c8f7958f5"));
	CHECK(digest_is(out + 64, "sha256:50127c0d6b338be78246434b4bce23ec"
			"f75e505158ea0bbd15effeb162fbf3ec"));
}

TEST(chain_ids_against_evp)
{
	enum { N = 5 };
	uint8_t ids[N * 32], out[N * 32], want[32], in_place[N * 32];

	for (size_t i = 0; i < sizeof(ids); i++)
		ids[i] = (uint8_t)(i * 7 + 3);
	CHECK_RC(chain_ids(ids, N, out), 0);
	CHECK(!memcmp(out, ids, 32));
	for (int i = 1; i < N; i++) {
		chain_ref(out + 32 * (i - 1), ids + 32 * i, want);
		CHECK(!memcmp(out + 32 * i, want, 32));
	}
	/* The output may overwrite the input. */
	memcpy(in_place, ids, sizeof(ids));
	CHECK_RC(chain_ids(in_place, N, in_place), 0);
	CHECK(!memcmp(in_place, out, sizeof(out)));
	CHECK_RC(chain_ids(ids, 1, out), 0);
	CHECK(!memcmp(out, ids, 32));
	CHECK_RC(chain_ids(ids, 0, NULL), 0);
}

CHECK_MAIN_BEGIN("test_manifest")
	RUN(oci_image);
	RUN(docker_image);
	RUN(no_media_type_in_body);
	RUN(oci_index_picks_platform);
	RUN(oci_index_no_match);
	RUN(arm64_variant_defaults);
	RUN(wildcard_variant);
	RUN(docker_list);
	RUN(index_entry_without_platform);
	RUN(not_json);
	RUN(malformed_image);
	RUN(malformed_index);
	RUN(unsupported_types);
	RUN(platforms);
	RUN(host_platform);
	RUN(config);
	RUN(config_malformed);
	RUN(chain_ids_known_vector);
	RUN(chain_ids_against_evp);
CHECK_MAIN_END
