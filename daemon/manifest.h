/* OCI / Docker manifests, indexes and image configs (jansson). */
#ifndef DAXFSD_MANIFEST_H
#define DAXFSD_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "daxfs.h"

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
/* Accept header value listing all four manifest types. */
#define MANIFEST_ACCEPT MT_OCI_MANIFEST ", " MT_OCI_INDEX ", " \
	MT_DOCKER_MANIFEST ", " MT_DOCKER_LIST

struct platform {
	char os[32];
	char arch[32];
	char variant[32];	/* "" if none */
};

/* The host's platform (linux/amd64, linux/arm64/v8, ...). */
void platform_host(struct platform *p);
/* "os/arch[/variant]" -> -EINVAL if malformed. */
int platform_parse(const char *s, struct platform *p, struct daxfs_err *err);

struct descriptor {
	char media_type[128];
	uint8_t digest[32];
	uint64_t size;
};

enum manifest_kind { MANIFEST_IMAGE = 1, MANIFEST_INDEX = 2 };

struct manifest {
	enum manifest_kind kind;
	char media_type[128];
	/* MANIFEST_IMAGE */
	struct descriptor config;
	struct descriptor *layers;
	size_t nlayers;
	/* MANIFEST_INDEX: the entry chosen for the platform */
	struct descriptor chosen;
};

/* Parse a manifest or index body.  content_type is the registry's
 * Content-Type (may be NULL: then mediaType in the body decides).  For an
 * index, picks the entry matching plat (os, arch, and variant if both
 * give one); none -> -ENOENT with a message listing what exists.  Bad
 * JSON, missing fields, bad digests, unknown media types -> -EBADMSG or
 * -EPROTONOSUPPORT with a message. */
int manifest_parse(const char *body, size_t len, const char *content_type,
		   const struct platform *plat, struct manifest *out,
		   struct daxfs_err *err);
void manifest_free(struct manifest *m);

struct image_config {
	uint8_t *diff_ids;	/* n x 32 bytes: rootfs.diff_ids */
	size_t ndiff_ids;
	struct platform plat;
};

/* Parse an image config (rootfs.type must be "layers"). */
int config_parse(const char *body, size_t len, struct image_config *out,
		 struct daxfs_err *err);
void config_free(struct image_config *c);

/* OCI chainIDs: chain[0] = diff_id[0];
 * chain[i] = sha256("sha256:<hex chain[i-1]> sha256:<hex diff_id[i]>"). */
int chain_ids(const uint8_t *diff_ids, size_t n, uint8_t *out);

#endif
