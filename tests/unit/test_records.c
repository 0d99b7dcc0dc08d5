/* Chain, image and alias records. */
#include <errno.h>
#include <sys/stat.h>

#include "check.h"
#include "testutil.h"

static char path[256];

static int count_images(const struct daxfs_image_info *im, void *arg)
{
	(void)im;
	(*(int *)arg)++;
	return 0;
}

TEST(chains_images_aliases)
{
	struct daxfs *fs;
	struct daxfs_layer_builder *b;
	struct daxfs_err err = { 0 };
	struct daxfs_chain_info c, got;
	struct daxfs_image_info im, img;
	uint8_t diff[32], dig[32], out[32];
	int n = 0;

	CHECK_RC(tu_mkfs(path, 32 << 20, 2), 0);
	CHECK_RC(tu_attach(path, 1, 2000, &fs), 0);
	tu_digest(diff, 7, 1);
	tu_digest(dig, 7, 2);
	memset(&c, 0, sizeof(c));
	tu_digest(c.chain_id, 7, 3);
	memcpy(c.diff_id, diff, 32);
	c.depth = 1;
	/* No layer record yet: refused. */
	CHECK(daxfs_chain_put(fs, &c, &err) == -ENOENT);
	CHECK_RC(daxfs_layer_build(fs, diff, &b, &err), 0);
	CHECK_RC(daxfs_builder_publish(b, NULL, &err), 0);
	CHECK_RC(daxfs_chain_put(fs, &c, &err), 0);
	CHECK_RC(daxfs_chain_put(fs, &c, &err), 0);	/* idempotent */
	CHECK_RC(daxfs_chain_get(fs, c.chain_id, &got), 0);
	CHECK(!memcmp(got.diff_id, diff, 32) && got.depth == 1);
	CHECK(daxfs_chain_get(fs, dig, &got) == -ENOENT);
	CHECK_RC(daxfs_layer_alias(fs, dig, diff, &err), 0);
	CHECK_RC(daxfs_layer_resolve(fs, dig, out), 0);
	CHECK(!memcmp(out, diff, 32));
	CHECK_RC(daxfs_layer_resolve(fs, diff, out), 0);
	memset(&im, 0, sizeof(im));
	strcpy(im.ref, "127.0.0.1:5000/test/app:1");
	tu_digest(im.manifest, 7, 4);
	memcpy(im.top_chain, c.chain_id, 32);
	im.nlayers = 1;
	CHECK_RC(daxfs_image_put(fs, &im, &err), 0);
	CHECK_RC(daxfs_image_get(fs, im.ref, &img), 0);
	CHECK(!memcmp(img.manifest, im.manifest, 32) && img.nlayers == 1);
	/* Replacing keeps one record per reference. */
	tu_digest(im.manifest, 7, 5);
	CHECK_RC(daxfs_image_put(fs, &im, &err), 0);
	CHECK_RC(daxfs_image_get(fs, im.ref, &img), 0);
	CHECK(!memcmp(img.manifest, im.manifest, 32));
	strcpy(im.ref, "docker.io/library/alpine:latest");
	CHECK_RC(daxfs_image_put(fs, &im, &err), 0);
	CHECK_RC(daxfs_images_foreach(fs, count_images, &n), 0);
	CHECK(n == 2);
	CHECK_RC(daxfs_image_remove(fs, im.ref, &err), 0);
	CHECK(daxfs_image_get(fs, im.ref, &img) == -ENOENT);
	CHECK(daxfs_image_remove(fs, im.ref, &err) == -ENOENT);
	tu_fsck_count = 0;
	CHECK_RC(daxfs_fsck(fs, 1, tu_fsck_line, NULL), 0);
	daxfs_close(fs);
	unlink(path);
}

CHECK_MAIN_BEGIN("test_records")
	tu_region_path(path, sizeof(path), "records");
	RUN(chains_images_aliases);
CHECK_MAIN_END
