/* The reading side of bench/fuse.sh: the same code reads the daxfs view's
 * overlay and the overlays on tmpfs and ext4.
 *
 *   bench_read [-d] seq FILE            read FILE start to end
 *   bench_read [-d] rand FILE COUNT     COUNT 4 KiB preads at random
 *                                       4 KiB-aligned offsets
 *   bench_read [-d] walk DIR [SKIP]     lstat every entry below DIR, then
 *                                       read every regular file (SKIP: a
 *                                       top-level entry left out)
 *
 * -d drops the page, dentry and inode caches (echo 3 > drop_caches) just
 * before the timed part, then waits SETTLE_MS so that a FUSE server has
 * answered the kernel's forgets for the dropped inodes before the clock
 * starts (the same wait for every filesystem).  Reads use a 128 KiB
 * buffer (as cat and cp do).
 * Each timed part prints one line "NAME seconds=S count=N bytes=B". */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "benchutil.h"

#define BUF_SIZE (128 * 1024)
#define RAND_SEED 0x5eedf00dULL
#define SETTLE_MS 300

static char buf[BUF_SIZE] __attribute__((aligned(4096)));

static void usage(void)
{
	fprintf(stderr, "usage: bench_read [-d] seq FILE | rand FILE COUNT | walk DIR [SKIP]\n");
	exit(2);
}

static void die(const char *what, const char *path, int err)
{
	fprintf(stderr, "bench_read: %s %s: %s\n", what, path, strerror(err));
	exit(1);
}

static void drop_caches(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);

	if (fd < 0)
		die("open", "/proc/sys/vm/drop_caches", errno);
	if (bench_write_all(fd, "3\n", 2) < 0)
		die("write", "/proc/sys/vm/drop_caches", errno);
	close(fd);
	usleep(SETTLE_MS * 1000);
}

static void report(const char *name, int64_t t0, long count, long long bytes)
{
	printf("%s seconds=%.6f count=%ld bytes=%lld\n", name,
	       (double)(bench_now_ns() - t0) / 1e9, count, bytes);
	fflush(stdout);
}

/* Read fd to its end; returns the bytes read or -errno. */
static long long read_fd(int fd)
{
	long long total = 0;

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return total;
		total += n;
	}
}

static int do_seq(const char *path, int drop)
{
	long long n;
	int64_t t0;
	int fd;

	if (drop)
		drop_caches();
	t0 = bench_now_ns();
	fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open", path, errno);
	n = read_fd(fd);
	if (n < 0)
		die("read", path, (int)-n);
	close(fd);
	report("seq", t0, 1, n);
	return 0;
}

static int do_rand(const char *path, long count, int drop)
{
	uint64_t seed = RAND_SEED, blocks;
	long long bytes = 0;
	struct stat st;
	int64_t t0;
	int fd;

	fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open", path, errno);
	if (fstat(fd, &st) < 0)
		die("stat", path, errno);
	blocks = (uint64_t)st.st_size / 4096;
	if (blocks == 0)
		die("size", path, EINVAL);
	close(fd);
	if (drop)
		drop_caches();
	t0 = bench_now_ns();
	fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open", path, errno);
	for (long i = 0; i < count; i++) {
		off_t off = (off_t)(bench_rand(&seed) % blocks) * 4096;
		ssize_t n = pread(fd, buf, 4096, off);

		if (n < 0 && errno == EINTR) {
			i--;
			continue;
		}
		if (n != 4096)
			die("pread", path, n < 0 ? errno : EIO);
		bytes += n;
	}
	close(fd);
	report("rand", t0, count, bytes);
	return 0;
}

/* ---- the tree walk ---- */

static char **files;
static size_t nfiles, capfiles;
static long nentries;
static const char *skip;

static int walk_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	if (type == FTW_NS || type == FTW_DNR) {
		fprintf(stderr, "bench_read: cannot stat or list %s\n", path);
		return FTW_STOP;
	}
	if (skip && ftw->level == 1 && !strcmp(path + ftw->base, skip))
		return type == FTW_D ? FTW_SKIP_SUBTREE : FTW_CONTINUE;
	nentries++;
	if (!S_ISREG(st->st_mode))
		return FTW_CONTINUE;
	if (nfiles == capfiles) {
		char **n;

		capfiles = capfiles ? capfiles * 2 : 8192;
		n = realloc(files, capfiles * sizeof(*files));
		if (!n)
			return FTW_STOP;
		files = n;
	}
	files[nfiles] = strdup(path);
	return files[nfiles++] ? FTW_CONTINUE : FTW_STOP;
}

static int do_walk(const char *dir, int drop)
{
	long long bytes = 0;
	int64_t t0;

	if (drop)
		drop_caches();
	t0 = bench_now_ns();
	if (nftw(dir, walk_one, 64, FTW_PHYS | FTW_ACTIONRETVAL) != 0)
		die("walk", dir, errno ? errno : EIO);
	report("stat", t0, nentries, 0);
	t0 = bench_now_ns();
	for (size_t i = 0; i < nfiles; i++) {
		int fd = open(files[i], O_RDONLY | O_NOFOLLOW);
		long long n;

		if (fd < 0)
			die("open", files[i], errno);
		n = read_fd(fd);
		if (n < 0)
			die("read", files[i], (int)-n);
		bytes += n;
		close(fd);
	}
	report("read", t0, (long)nfiles, bytes);
	for (size_t i = 0; i < nfiles; i++)
		free(files[i]);
	free(files);
	return 0;
}

int main(int argc, char **argv)
{
	int drop = 0, a = 1;

	if (a < argc && !strcmp(argv[a], "-d")) {
		drop = 1;
		a++;
	}
	if (argc - a == 2 && !strcmp(argv[a], "seq"))
		return do_seq(argv[a + 1], drop);
	if (argc - a == 3 && !strcmp(argv[a], "rand")) {
		long count = strtol(argv[a + 2], NULL, 10);

		if (count <= 0)
			usage();
		return do_rand(argv[a + 1], count, drop);
	}
	if ((argc - a == 2 || argc - a == 3) && !strcmp(argv[a], "walk")) {
		skip = argc - a == 3 ? argv[a + 2] : NULL;
		return do_walk(argv[a + 1], drop);
	}
	usage();
	return 2;
}
