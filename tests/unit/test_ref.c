/* Image references and digests: docker's parsing and normalisation. */
#include <errno.h>

#include "check.h"
#include "ref.h"

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define DIGEST "sha256:" HEX64

/* Parse s and compare every field and the formatted form; a NULL want_*
 * means "". */
static int ref_is(const char *s, const char *domain, const char *path,
		  const char *tag, const char *digest, const char *formatted)
{
	struct image_ref r;
	struct daxfs_err err = { 0 };
	char buf[1024];

	if (ref_parse(s, &r, &err) != 0) {
		fprintf(stderr, "ref_parse(%s): %s\n", s, err.msg);
		return 0;
	}
	ref_format(&r, buf, sizeof(buf));
	if (strcmp(r.domain, domain) || strcmp(r.path, path) ||
	    strcmp(r.tag, tag ? tag : "") || strcmp(r.digest, digest ? digest : "") ||
	    strcmp(buf, formatted)) {
		fprintf(stderr, "ref_parse(%s): got %s | %s | %s | %s -> %s\n", s,
			r.domain, r.path, r.tag, r.digest, buf);
		return 0;
	}
	return 1;
}

/* s must be refused with -EINVAL, a message containing why, and out left
 * empty. */
static int ref_bad(const char *s, const char *why)
{
	struct image_ref r;
	struct daxfs_err err = { 0 };
	int rc = ref_parse(s, &r, &err);

	if (rc != -EINVAL || err.code != EINVAL || !strstr(err.msg, why) ||
	    r.domain[0] || r.path[0]) {
		fprintf(stderr, "ref_parse(%s) = %d, \"%s\" (want \"%s\")\n",
			s ? s : "NULL", rc, err.msg, why);
		return 0;
	}
	return 1;
}

TEST(docker_hub_defaults)
{
	CHECK(ref_is("alpine", "docker.io", "library/alpine", "latest", NULL,
		     "docker.io/library/alpine:latest"));
	CHECK(ref_is("library/alpine:3.19", "docker.io", "library/alpine",
		     "3.19", NULL, "docker.io/library/alpine:3.19"));
	CHECK(ref_is("docker.io/x/y", "docker.io", "x/y", "latest", NULL,
		     "docker.io/x/y:latest"));
	CHECK(ref_is("docker.io/alpine", "docker.io", "library/alpine",
		     "latest", NULL, "docker.io/library/alpine:latest"));
	CHECK(ref_is("index.docker.io/x/y:1", "docker.io", "x/y", "1", NULL,
		     "docker.io/x/y:1"));
	/* No dot, colon or "localhost": still a docker.io namespace. */
	CHECK(ref_is("myorg/team/app", "docker.io", "myorg/team/app", "latest",
		     NULL, "docker.io/myorg/team/app:latest"));
}

TEST(other_registries)
{
	CHECK(ref_is("localhost/x", "localhost", "x", "latest", NULL,
		     "localhost/x:latest"));
	CHECK(ref_is("localhost:5000/a/b:tag", "localhost:5000", "a/b", "tag",
		     NULL, "localhost:5000/a/b:tag"));
	CHECK(ref_is("127.0.0.1:5000/test/app:1", "127.0.0.1:5000", "test/app",
		     "1", NULL, "127.0.0.1:5000/test/app:1"));
	CHECK(ref_is("ghcr.io/o/r", "ghcr.io", "o/r", "latest", NULL,
		     "ghcr.io/o/r:latest"));
	CHECK(ref_is("[::1]:5000/a:b", "[::1]:5000", "a", "b", NULL,
		     "[::1]:5000/a:b"));
	/* Without a '/', "localhost:5000" is repository "localhost", tag
	 * "5000", exactly as docker reads it. */
	CHECK(ref_is("localhost:5000", "docker.io", "library/localhost", "5000",
		     NULL, "docker.io/library/localhost:5000"));
}

TEST(digests_in_refs)
{
	CHECK(ref_is("repo@" DIGEST, "docker.io", "library/repo", NULL, DIGEST,
		     "docker.io/library/repo@" DIGEST));
	CHECK(ref_is("repo:tag@" DIGEST, "docker.io", "library/repo", "tag",
		     DIGEST, "docker.io/library/repo:tag@" DIGEST));
	CHECK(ref_is("localhost:5000/a/b@" DIGEST, "localhost:5000", "a/b",
		     NULL, DIGEST, "localhost:5000/a/b@" DIGEST));
}

TEST(path_and_tag_grammar)
{
	char tag[200], s[256], full[300];

	CHECK(ref_is("x/a.b_c__d---e/f-g:T_a.g-1", "docker.io", "x/a.b_c__d---e/f-g",
		     "T_a.g-1", NULL, "docker.io/x/a.b_c__d---e/f-g:T_a.g-1"));
	/* A dot in the first component makes it a registry host. */
	CHECK(ref_is("a.b/c", "a.b", "c", "latest", NULL, "a.b/c:latest"));
	CHECK(ref_is("x:_tag", "docker.io", "library/x", "_tag", NULL,
		     "docker.io/library/x:_tag"));
	/* Tags run to 128 characters, and no further. */
	memset(tag, 'v', 128);
	tag[128] = '\0';
	snprintf(s, sizeof(s), "x:%s", tag);
	snprintf(full, sizeof(full), "docker.io/library/x:%s", tag);
	CHECK(ref_is(s, "docker.io", "library/x", tag, NULL, full));
	strcat(s, "v");
	CHECK(ref_bad(s, "bad tag"));
}

TEST(invalid_refs)
{
	char longname[300];

	CHECK(ref_bad("", "empty"));
	CHECK(ref_bad(NULL, "empty"));
	CHECK(ref_bad("Alpine", "must be lowercase"));
	CHECK(ref_bad("docker.io/Library/alpine", "must be lowercase"));
	CHECK(ref_bad("a//b", "bad repository name"));
	CHECK(ref_bad("/a", "bad repository name"));
	CHECK(ref_bad("a/", "bad repository name"));
	CHECK(ref_bad("alpine:", "empty tag"));
	CHECK(ref_bad("alpine:.x", "bad tag"));
	CHECK(ref_bad("alpine:a b", "bad tag"));
	CHECK(ref_bad("alpine@", "bad digest"));
	CHECK(ref_bad("alpine@sha256:abc", "bad digest"));
	CHECK(ref_bad("alpine@sha256:" "0123456789ABCDEF0123456789abcdef"
		      "0123456789abcdef0123456789abcdef", "bad digest"));
	CHECK(ref_bad("alpine@sha512:" HEX64 HEX64, "bad digest"));
	CHECK(ref_bad("alpine@" DIGEST "@" DIGEST, "bad digest"));
	CHECK(ref_bad("a-/b", "bad repository name"));
	CHECK(ref_bad("a_-b", "bad repository name"));
	CHECK(ref_bad("a___b", "bad repository name"));
	CHECK(ref_bad("a..b", "bad repository name"));
	CHECK(ref_bad("a b", "bad repository name"));
	CHECK(ref_bad("-host.io/a", "bad registry host"));
	CHECK(ref_bad("host.io:/a", "bad registry host"));
	CHECK(ref_bad("host.io:50x/a", "bad registry host"));
	CHECK(ref_bad("localhost:5000/", "empty repository name"));
	CHECK(ref_bad(HEX64, "image ID"));
	memset(longname, 'a', 260);
	longname[260] = '\0';
	CHECK(ref_bad(longname, "longer than 255"));
}

TEST(registry_host)
{
	struct image_ref r;

	CHECK_RC(ref_parse("alpine", &r, NULL), 0);
	CHECK(!strcmp(ref_registry_host(&r), "registry-1.docker.io"));
	CHECK_RC(ref_parse("127.0.0.1:5000/test/app:1", &r, NULL), 0);
	CHECK(!strcmp(ref_registry_host(&r), "127.0.0.1:5000"));
	CHECK_RC(ref_parse("quay.io/a/b", &r, NULL), 0);
	CHECK(!strcmp(ref_registry_host(&r), "quay.io"));
}

TEST(digest_round_trip)
{
	uint8_t d[32], d2[32];
	char s[72];

	for (int i = 0; i < 32; i++)
		d[i] = (uint8_t)(i * 37 + 5);
	digest_format(d, s);
	CHECK(strlen(s) == 71 && !strncmp(s, "sha256:", 7));
	CHECK_RC(digest_parse(s, d2), 0);
	CHECK(!memcmp(d, d2, 32));

	CHECK_RC(digest_parse(DIGEST, d2), 0);
	CHECK(d2[0] == 0x01 && d2[1] == 0x23 && d2[7] == 0xef && d2[31] == 0xef);
	digest_format(d2, s);
	CHECK(!strcmp(s, DIGEST));
}

TEST(digest_rejects)
{
	uint8_t d[32];

	CHECK_RC(digest_parse(NULL, d), -EINVAL);
	CHECK_RC(digest_parse("", d), -EINVAL);
	CHECK_RC(digest_parse(HEX64, d), -EINVAL);
	CHECK_RC(digest_parse("sha256:" HEX64 "0", d), -EINVAL);
	CHECK_RC(digest_parse("sha256:" "0123456789abcdef0123456789abcdef"
			      "0123456789abcdef0123456789abcde", d), -EINVAL);
	CHECK_RC(digest_parse("SHA256:" HEX64, d), -EINVAL);
	CHECK_RC(digest_parse("sha256:" "0123456789ABCDEF0123456789abcdef"
			      "0123456789abcdef0123456789abcdef", d), -EINVAL);
	CHECK_RC(digest_parse("sha256:" "g123456789abcdef0123456789abcdef"
			      "0123456789abcdef0123456789abcdef", d), -EINVAL);
	CHECK_RC(digest_parse("sha512:" HEX64, d), -EINVAL);
}

CHECK_MAIN_BEGIN("test_ref")
	RUN(docker_hub_defaults);
	RUN(other_registries);
	RUN(digests_in_refs);
	RUN(path_and_tag_grammar);
	RUN(invalid_refs);
	RUN(registry_host);
	RUN(digest_round_trip);
	RUN(digest_rejects);
CHECK_MAIN_END
