/* helper_unpack REGION HOST FILE MEDIA_TYPE DIFF_ID [DIGEST]
 * Unpacks the layer blob FILE into REGION as host HOST (a test uuid);
 * digests are 64 hex characters.  Prints "ok SERIAL" or "error: MSG". */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "testutil.h"
#include "unpack.h"

static int unhex(const char *s, uint8_t out[32])
{
	if (strlen(s) != 64)
		return -1;
	for (int i = 0; i < 32; i++)
		if (sscanf(s + 2 * i, "%2hhx", &out[i]) != 1)
			return -1;
	return 0;
}

static ssize_t file_read(void *arg, void *buf, size_t len)
{
	ssize_t n = read(*(int *)arg, buf, len);

	return n < 0 ? -errno : n;
}

int main(int argc, char **argv)
{
	struct unpack_job job = { 0 };
	struct unpack_result res;
	struct daxfs_err err = { 0 };
	uint8_t diff[32], dig[32];
	struct daxfs *fs;
	int fd, rc;

	if (argc < 6 || unhex(argv[5], diff) < 0 || (argc > 6 && unhex(argv[6], dig) < 0)) {
		fprintf(stderr, "usage: helper_unpack REGION HOST FILE MEDIA_TYPE DIFF_ID [DIGEST]\n");
		return 2;
	}
	fd = open(argv[3], O_RDONLY | O_CLOEXEC);
	if (fd < 0 || tu_attach(argv[1], atoi(argv[2]), 2000, &fs) < 0)
		return 2;
	if (unpack_media_type(argv[4], &job.compression) < 0) {
		printf("error: unknown media type %s\n", argv[4]);
		return 1;
	}
	job.diff_id = diff;
	job.digest = argc > 6 ? dig : NULL;
	job.read = file_read;
	job.arg = &fd;
	rc = unpack_layer(fs, &job, &res, &err);
	if (rc < 0)
		printf("error: %s\n", err.msg);
	else
		printf("ok %llu\n", (unsigned long long)res.serial);
	daxfs_close(fs);
	close(fd);
	return rc < 0 ? 1 : 0;
}
