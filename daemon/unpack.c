/* Streaming layer unpack.
 *
 * libarchive's tar reader does not expose the decompressed stream, so two
 * readers are chained: a raw-format reader with the decompression filter
 * (fed by the blob, hashed on the way in), and a tar-only reader fed by
 * the first one's output (hashed on the way through).  Both streams are
 * drained to their end before the digests are compared. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "unpack.h"

#define BUF 65536

struct pipeline {
	const struct unpack_job *job;
	EVP_MD_CTX *blob_md, *tar_md;
	struct archive *raw, *tar;
	uint8_t in[BUF], mid[BUF], out[BUF];
	uint64_t blob_bytes, tar_bytes;
	int read_error;			/* -errno from the blob reader */
	bool raw_eof;
};

int unpack_media_type(const char *mt, enum unpack_compression *out)
{
	static const struct { const char *type; enum unpack_compression c; } t[] = {
		{ "application/vnd.oci.image.layer.v1.tar", UNPACK_NONE },
		{ "application/vnd.oci.image.layer.v1.tar+gzip", UNPACK_GZIP },
		{ "application/vnd.oci.image.layer.v1.tar+zstd", UNPACK_ZSTD },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar", UNPACK_NONE },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", UNPACK_GZIP },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", UNPACK_ZSTD },
		{ "application/vnd.docker.image.rootfs.diff.tar.gzip", UNPACK_GZIP },
		{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", UNPACK_GZIP },
		{ "application/vnd.docker.image.rootfs.diff.tar", UNPACK_NONE },
		{ "application/vnd.docker.image.rootfs.diff.tar.zstd", UNPACK_ZSTD },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (!strcmp(mt, t[i].type)) {
			*out = t[i].c;
			return 0;
		}
	return -EPROTONOSUPPORT;
}

/* Stage 1 input: the blob, hashed as it arrives. */
static ssize_t raw_read(struct archive *a, void *arg, const void **buf)
{
	struct pipeline *p = arg;
	ssize_t n = p->job->read(p->job->arg, p->in, sizeof(p->in));

	if (n < 0) {
		p->read_error = (int)n;
		archive_set_error(a, (int)-n, "reading the blob: %s", strerror((int)-n));
		return -1;
	}
	EVP_DigestUpdate(p->blob_md, p->in, (size_t)n);
	p->blob_bytes += (uint64_t)n;
	if (p->job->progress)
		p->job->progress(p->job->progress_arg, p->blob_bytes);
	*buf = p->in;
	return n;
}

/* Stage 2 input: the decompressed stream, hashed on the way through. */
static ssize_t tar_read(struct archive *a, void *arg, const void **buf)
{
	struct pipeline *p = arg;
	la_ssize_t n;

	if (p->raw_eof)
		return 0;
	n = archive_read_data(p->raw, p->mid, sizeof(p->mid));
	if (n < 0) {
		archive_set_error(a, archive_errno(p->raw), "%s",
				  archive_error_string(p->raw));
		return -1;
	}
	if (n == 0)
		p->raw_eof = true;
	EVP_DigestUpdate(p->tar_md, p->mid, (size_t)n);
	p->tar_bytes += (uint64_t)n;
	*buf = p->mid;
	return n;
}

static int want_filter(enum unpack_compression c)
{
	switch (c) {
	case UNPACK_NONE: return ARCHIVE_FILTER_NONE;
	case UNPACK_GZIP: return ARCHIVE_FILTER_GZIP;
	case UNPACK_ZSTD: return ARCHIVE_FILTER_ZSTD;
	default: return -1;
	}
}

static int stage_open(struct pipeline *p, struct daxfs_err *err)
{
	struct archive_entry *e;
	int f;

	p->raw = archive_read_new();
	p->tar = archive_read_new();
	if (!p->raw || !p->tar)
		return -ENOMEM;
	archive_read_support_filter_gzip(p->raw);
	archive_read_support_filter_zstd(p->raw);
	archive_read_support_format_raw(p->raw);
	if (archive_read_open(p->raw, p, NULL, raw_read, NULL) != ARCHIVE_OK ||
	    archive_read_next_header(p->raw, &e) != ARCHIVE_OK)
		return daxfs_err_set(err, p->read_error ? p->read_error : -EBADMSG,
				     "layer blob: %s", archive_error_string(p->raw));
	f = archive_filter_code(p->raw, 0);
	if (want_filter(p->job->compression) >= 0 &&
	    f != want_filter(p->job->compression))
		return daxfs_err_set(err, -EBADMSG,
				     "layer blob is compressed with %s, not as its media type says",
				     archive_filter_name(p->raw, 0));
	archive_read_support_format_tar(p->tar);
	if (archive_read_open(p->tar, p, NULL, tar_read, NULL) != ARCHIVE_OK)
		return daxfs_err_set(err, -EBADMSG, "layer tar: %s",
				     archive_error_string(p->tar));
	return 0;
}

static void pipeline_free(struct pipeline *p)
{
	if (p->raw)
		archive_read_free(p->raw);
	if (p->tar)
		archive_read_free(p->tar);
	EVP_MD_CTX_free(p->blob_md);
	EVP_MD_CTX_free(p->tar_md);
}

/* ---- tar entries -> builder ---- */

struct xattrs {
	const char *names[64];
	const void *values[64];
	size_t lens[64];
	size_t n;
};

/* Extended attributes of an entry, minus overlayfs control data: a layer
 * must never be able to plant trusted.overlay.* on its files. */
static int entry_xattrs(struct archive_entry *ae, struct xattrs *x,
			const char *path, struct daxfs_err *err)
{
	const char *name;
	const void *value;
	size_t size;

	x->n = 0;
	archive_entry_xattr_reset(ae);
	while (archive_entry_xattr_next(ae, &name, &value, &size) == ARCHIVE_OK) {
		if (!strncmp(name, "trusted.overlay.", 16))
			continue;
		if (x->n == 64)
			return daxfs_err_set(err, -E2BIG, "entry '%s' has too many xattrs", path);
		x->names[x->n] = name;
		x->values[x->n] = value;
		x->lens[x->n++] = size;
	}
	return 0;
}

/* Turn OCI whiteout names into flags: ".wh..wh..opq" marks its directory
 * opaque, ".wh.NAME" hides NAME. */
static int whiteout_of(const char *path, char *out, size_t outlen, bool *whiteout,
		       bool *opaque)
{
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;

	*whiteout = *opaque = false;
	if (strncmp(base, ".wh.", 4))
		return 0;
	if (dirlen + strlen(base) >= outlen)
		return -ENAMETOOLONG;
	memcpy(out, path, dirlen);
	if (!strcmp(base, ".wh..wh..opq")) {
		*opaque = true;
		out[dirlen ? dirlen - 1 : 0] = 0;
		if (!dirlen)
			strcpy(out, ".");
		return 0;
	}
	*whiteout = true;
	strcpy(out + dirlen, base + 4);
	return 0;
}

static int add_entry(struct daxfs_layer_builder *b, struct pipeline *p,
		     struct archive_entry *ae, struct daxfs_err *err)
{
	const char *path = archive_entry_pathname(ae);
	struct daxfs_entry e;
	struct xattrs x;
	char wpath[4096];
	bool wh, opq;
	int rc;

	if (!path)
		return daxfs_err_set(err, -EBADMSG, "tar entry without a name");
	memset(&e, 0, sizeof(e));
	rc = whiteout_of(path, wpath, sizeof(wpath), &wh, &opq);
	if (rc < 0)
		return daxfs_err_set(err, rc, "entry '%s': name too long", path);
	e.path = wh || opq ? wpath : path;
	e.whiteout = wh;
	e.opaque = opq;
	e.mode = (uint32_t)archive_entry_mode(ae);
	e.uid = (uint32_t)archive_entry_uid(ae);
	e.gid = (uint32_t)archive_entry_gid(ae);
	e.mtime_sec = archive_entry_mtime(ae);
	e.mtime_nsec = (uint32_t)archive_entry_mtime_nsec(ae);
	e.rdev_major = (uint32_t)archive_entry_rdevmajor(ae);
	e.rdev_minor = (uint32_t)archive_entry_rdevminor(ae);
	if (archive_entry_hardlink(ae)) {
		e.hardlink = 1;
		e.link = archive_entry_hardlink(ae);
	} else if (archive_entry_filetype(ae) == AE_IFLNK) {
		e.link = archive_entry_symlink(ae);
		if (!e.link)
			return daxfs_err_set(err, -EBADMSG, "symlink '%s' without target", path);
	} else if (archive_entry_filetype(ae) == AE_IFREG && !wh) {
		e.size = (uint64_t)archive_entry_size(ae);
	}
	if (opq)
		e.mode = S_IFDIR | 0755;
	rc = entry_xattrs(ae, &x, path, err);
	if (rc < 0)
		return rc;
	e.nxattrs = x.n;
	e.xattr_names = x.names;
	e.xattr_values = x.values;
	e.xattr_lens = x.lens;
	rc = daxfs_builder_add(b, &e, err);
	if (rc < 0 || !e.size)
		return rc;
	for (uint64_t left = e.size; left;) {
		la_ssize_t n = archive_read_data(p->tar, p->out, sizeof(p->out));

		if (n <= 0)
			return daxfs_err_set(err, -EBADMSG, "entry '%s': tar data ends early%s%s",
					     path, n < 0 ? ": " : "",
					     n < 0 ? archive_error_string(p->tar) : "");
		if ((uint64_t)n > left)
			n = (la_ssize_t)left;
		rc = daxfs_builder_write(b, p->out, (size_t)n, err);
		if (rc < 0)
			return rc;
		left -= (uint64_t)n;
	}
	return 0;
}

/* Read the rest of both streams so both digests cover everything. */
static int drain(struct pipeline *p, struct daxfs_err *err)
{
	const void *buf;

	while (!p->raw_eof) {
		struct archive *dummy = p->tar;
		ssize_t n = tar_read(dummy, p, &buf);

		if (n < 0)
			return daxfs_err_set(err, -EBADMSG, "layer blob: %s",
					     archive_error_string(p->raw));
	}
	/* Bytes past the end of the compressed stream still count for the
	 * blob digest. */
	for (;;) {
		ssize_t n = p->job->read(p->job->arg, p->in, sizeof(p->in));

		if (n < 0)
			return daxfs_err_set(err, (int)n, "reading the blob: %s",
					     strerror((int)-n));
		if (n == 0)
			return 0;
		EVP_DigestUpdate(p->blob_md, p->in, (size_t)n);
		p->blob_bytes += (uint64_t)n;
	}
}

static void hex(const uint8_t *d, char out[65])
{
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static int verify(struct pipeline *p, struct unpack_result *res,
		  struct daxfs_err *err)
{
	unsigned int n = 32;
	char want[65], got[65];

	EVP_DigestFinal_ex(p->blob_md, res->digest, &n);
	EVP_DigestFinal_ex(p->tar_md, res->diff_id, &n);
	res->blob_bytes = p->blob_bytes;
	res->tar_bytes = p->tar_bytes;
	if (p->job->digest && memcmp(res->digest, p->job->digest, 32)) {
		hex(p->job->digest, want);
		hex(res->digest, got);
		return daxfs_err_set(err, -EBADMSG,
				     "blob digest mismatch: expected sha256:%s, got sha256:%s",
				     want, got);
	}
	if (memcmp(res->diff_id, p->job->diff_id, 32)) {
		hex(p->job->diff_id, want);
		hex(res->diff_id, got);
		return daxfs_err_set(err, -EBADMSG,
				     "diff_id mismatch: expected sha256:%s, got sha256:%s",
				     want, got);
	}
	return 0;
}

int unpack_layer(struct daxfs *fs, const struct unpack_job *job,
		 struct unpack_result *res, struct daxfs_err *err)
{
	struct daxfs_layer_builder *b = NULL;
	struct archive_entry *ae;
	struct pipeline *p;
	int rc, r;

	memset(res, 0, sizeof(*res));
	p = calloc(1, sizeof(*p));
	if (!p)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	p->job = job;
	p->blob_md = EVP_MD_CTX_new();
	p->tar_md = EVP_MD_CTX_new();
	if (!p->blob_md || !p->tar_md ||
	    EVP_DigestInit_ex(p->blob_md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestInit_ex(p->tar_md, EVP_sha256(), NULL) != 1) {
		rc = daxfs_err_set(err, -ENOMEM, "sha256 unavailable");
		goto out;
	}
	rc = daxfs_layer_build(fs, job->diff_id, &b, err);
	if (rc < 0)
		goto out;
	if (job->open) {
		rc = job->open(job->arg, err);
		if (rc < 0)
			goto out;
	}
	rc = stage_open(p, err);
	if (rc < 0)
		goto out;
	while ((r = archive_read_next_header(p->tar, &ae)) == ARCHIVE_OK ||
	       r == ARCHIVE_WARN) {
		rc = add_entry(b, p, ae, err);
		if (rc < 0)
			goto out;
		res->entries++;
	}
	if (r != ARCHIVE_EOF) {
		rc = daxfs_err_set(err, p->read_error ? p->read_error : -EBADMSG,
				   "layer tar: %s", archive_error_string(p->tar));
		goto out;
	}
	rc = drain(p, err);
	if (rc == 0)
		rc = verify(p, res, err);
	if (rc == 0) {
		daxfs_builder_set_source(b, res->digest, res->blob_bytes);
		if (job->before_publish)
			rc = job->before_publish(job->arg, err);
	}
	if (rc == 0) {
		rc = daxfs_builder_publish(b, &res->serial, err);
		if (rc == 0)
			b = NULL;	/* published: the builder is gone */
	}
out:
	daxfs_builder_abort(b);
	pipeline_free(p);
	free(p);
	return rc;
}
