/* Local snapshot directories: see snapdir.h.  The walks use openat and
 * fdopendir (no nftw: it keeps its state in globals, and handlers run
 * on many threads). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapdir.h"

void snapdir_path(const char *base, int64_t id, const char *sub, char *out, size_t len)
{
	snprintf(out, len, "%s/%" PRId64 "%s%s", base, id, sub[0] ? "/" : "", sub);
}

/* Remove name in dfd, recursively, not crossing into other filesystems. */
static int remove_at(int dfd, const char *name, dev_t dev)
{
	struct stat st;
	struct dirent *e;
	DIR *d;
	int fd, rc = 0;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlinkat(dfd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
	if (st.st_dev != dev)
		return -EBUSY;	/* a mount point */
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((e = readdir(d))) {
		int r;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		r = remove_at(dirfd(d), e->d_name, dev);
		if (r < 0 && rc == 0)
			rc = r;
	}
	closedir(d);
	if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && rc == 0)
		rc = -errno;
	return rc;
}

static int remove_tree(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	return remove_at(AT_FDCWD, path, st.st_dev);
}

int snapdir_remove(const char *base, int64_t id)
{
	char path[4200];

	snapdir_path(base, id, "", path, sizeof(path));
	return remove_tree(path);
}

int snapdir_create(const char *base, int64_t id, int with_work, struct daxfs_err *err)
{
	char path[4200];
	int rc = snapdir_remove(base, id);

	snapdir_path(base, id, "", path, sizeof(path));
	if (rc == 0 && mkdir(path, 0700) < 0)
		rc = -errno;
	snapdir_path(base, id, "fs", path, sizeof(path));
	if (rc == 0 && mkdir(path, 0755) < 0)
		rc = -errno;
	/* The overlay root takes fs's mode: exactly 0755, whatever the umask. */
	if (rc == 0 && chmod(path, 0755) < 0)
		rc = -errno;
	if (with_work) {
		snapdir_path(base, id, "work", path, sizeof(path));
		if (rc == 0 && mkdir(path, 0700) < 0)
			rc = -errno;
	}
	if (rc < 0) {
		snapdir_remove(base, id);
		return daxfs_err_set(err, rc, "create %s: %s", path, strerror(-rc));
	}
	return 0;
}

int snapdir_prune(const char *base, int64_t last, int (*keep)(int64_t id, void *arg), void *arg)
{
	DIR *d = opendir(base);
	struct dirent *e;
	int rc = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d))) {
		char *end;
		long long id;

		errno = 0;
		id = strtoll(e->d_name, &end, 10);
		if (errno || *end || end == e->d_name || id <= 0 || id > last || keep(id, arg))
			continue;
		if (snapdir_remove(base, id) < 0)
			rc = -EBUSY;
	}
	closedir(d);
	return rc;
}

/* ---- usage ---- */

struct usage {
	int64_t size, inodes;
	ino_t *linked;		/* inodes with more than one link, counted later */
	int64_t *linked_size;
	size_t nlinked, cap;
};

static int count(struct usage *u, const struct stat *st)
{
	if (st->st_nlink > 1 && !S_ISDIR(st->st_mode)) {
		if (u->nlinked == u->cap) {
			size_t cap = u->cap ? u->cap * 2 : 64;
			ino_t *l = realloc(u->linked, cap * sizeof(*l));
			int64_t *s;

			if (!l)
				return -ENOMEM;
			u->linked = l;
			s = realloc(u->linked_size, cap * sizeof(*s));
			if (!s)
				return -ENOMEM;
			u->linked_size = s;
			u->cap = cap;
		}
		u->linked[u->nlinked] = st->st_ino;
		u->linked_size[u->nlinked++] = (int64_t)st->st_blocks * 512;
		return 0;
	}
	u->size += (int64_t)st->st_blocks * 512;
	u->inodes++;
	return 0;
}

static int usage_at(int dfd, const char *name, dev_t dev, struct usage *u)
{
	struct stat st;
	struct dirent *e;
	DIR *d;
	int fd, rc;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	rc = count(u, &st);
	if (rc < 0 || !S_ISDIR(st.st_mode) || st.st_dev != dev)
		return rc;
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while (rc == 0 && (e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			rc = usage_at(dirfd(d), e->d_name, dev, u);
	closedir(d);
	return rc;
}

static int cmp_ino(const void *a, const void *b)
{
	ino_t x = *(const ino_t *)a, y = *(const ino_t *)b;

	return x < y ? -1 : x > y;
}

int snapdir_usage(const char *dir, int64_t *size, int64_t *inodes)
{
	struct usage u = { 0 };
	struct stat st;
	int rc;

	if (lstat(dir, &st) < 0)
		return -errno;
	rc = usage_at(AT_FDCWD, dir, st.st_dev, &u);
	if (rc == 0 && u.nlinked) {
		/* Sizes travel with their inode numbers through the sort. */
		struct { ino_t ino; int64_t size; } *v = malloc(u.nlinked * sizeof(*v));

		if (!v) {
			rc = -ENOMEM;
		} else {
			for (size_t i = 0; i < u.nlinked; i++) {
				v[i].ino = u.linked[i];
				v[i].size = u.linked_size[i];
			}
			qsort(v, u.nlinked, sizeof(*v), cmp_ino);
			for (size_t i = 0; i < u.nlinked; i++) {
				if (i && v[i].ino == v[i - 1].ino)
					continue;
				u.size += v[i].size;
				u.inodes++;
			}
			free(v);
		}
	}
	free(u.linked);
	free(u.linked_size);
	*size = u.size;
	*inodes = u.inodes;
	return rc;
}
