/* Image references, parsed the way docker and containerd do. */
#ifndef DAXFSD_REF_H
#define DAXFSD_REF_H

#include "daxfs.h"

struct image_ref {
	char domain[256];	/* "docker.io", "127.0.0.1:5000" */
	char path[512];		/* "library/alpine", "test/app" */
	char tag[129];		/* "latest" unless a digest is given alone;
				 * a tag is at most 128 characters */
	char digest[72];	/* "sha256:<64 hex>" or "" */
};

/* "alpine" -> docker.io/library/alpine:latest; "host:port/repo:tag";
 * "repo@sha256:..."; "repo:tag@sha256:...".  Invalid references (bad
 * characters, uppercase repository, bad digest) give -EINVAL with a
 * message. */
int ref_parse(const char *s, struct image_ref *out, struct daxfs_err *err);
/* Normalised string: domain/path[:tag][@digest]. */
void ref_format(const struct image_ref *r, char *buf, size_t len);
/* Registry host to connect to: docker.io -> registry-1.docker.io. */
const char *ref_registry_host(const struct image_ref *r);

/* "sha256:<hex>" <-> 32 bytes; -EINVAL for anything else. */
int digest_parse(const char *s, uint8_t out[32]);
void digest_format(const uint8_t d[32], char out[72]);

#endif
