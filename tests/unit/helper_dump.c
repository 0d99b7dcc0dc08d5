/* helper_dump REGION HOST DIFF_ID
 * Prints a layer's tree, one entry per line, for comparison with the
 * layer tar: path<TAB>type<TAB>mode<TAB>uid<TAB>gid<TAB>mtime.nsec<TAB>
 * size<TAB>sha256-or-link<TAB>inode<TAB>rdev<TAB>flags<TAB>xattrs(hex). */
#include <openssl/evp.h>
#include <sys/stat.h>

#include "testutil.h"

static struct daxfs_layer *L;

static void hexs(const void *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02x", ((const uint8_t *)p)[i]);
}

static void content_sha(uint32_t ino, uint64_t size)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	struct daxfs_piece p[64];
	uint8_t out[32];
	unsigned int n = 32;
	uint64_t off = 0;

	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	while (off < size) {
		int k = daxfs_file_pieces(L, ino, off, (size_t)(size - off), p, 64);

		if (k <= 0)
			break;
		for (int i = 0; i < k; i++) {
			EVP_DigestUpdate(md, p[i].ptr, p[i].len);
			off += p[i].len;
		}
	}
	EVP_DigestFinal_ex(md, out, &n);
	EVP_MD_CTX_free(md);
	hexs(out, 32);
}

static void dump(uint32_t dir, const char *prefix)
{
	const char *name;
	size_t nl;
	uint32_t ino;
	uint8_t dt;

	for (uint32_t i = 0; daxfs_readdir(L, dir, i, &name, &nl, &ino, &dt) == 0; i++) {
		struct daxfs_stat st;
		char path[4096], xl[4096];
		ssize_t xn;

		snprintf(path, sizeof(path), "%s%s%.*s", prefix, *prefix ? "/" : "",
			 (int)nl, name);
		daxfs_stat(L, ino, &st);
		printf("%s\t%c\t%o\t%u\t%u\t%lld.%09u\t%llu\t", path,
		       S_ISDIR(st.mode) ? 'd' : S_ISREG(st.mode) ? 'f' : S_ISLNK(st.mode) ? 'l' :
		       S_ISCHR(st.mode) ? 'c' : S_ISBLK(st.mode) ? 'b' : S_ISFIFO(st.mode) ? 'p' : '?',
		       st.mode & 07777, st.uid, st.gid, (long long)st.mtime_sec, st.mtime_nsec,
		       (unsigned long long)(S_ISREG(st.mode) ? st.size : 0));
		if (S_ISREG(st.mode)) {
			content_sha(ino, st.size);
		} else if (S_ISLNK(st.mode)) {
			const char *t;
			size_t tl;

			if (daxfs_readlink(L, ino, &t, &tl) == 0)
				hexs(t, tl);
		}
		printf("\t%u\t%u:%u\t%u\t", ino, st.rdev_major, st.rdev_minor, st.flags);
		xn = daxfs_listxattr(L, ino, xl, sizeof(xl));
		for (ssize_t o = 0; xn > 0 && o < xn; o += (ssize_t)strlen(xl + o) + 1) {
			char v[8192];
			ssize_t vn = daxfs_getxattr(L, ino, xl + o, v, sizeof(v));

			printf("%s=", xl + o);
			if (vn > 0)
				hexs(v, (size_t)vn);
			printf(";");
		}
		printf("\n");
		if (S_ISDIR(st.mode))
			dump(ino, path);
	}
}

int main(int argc, char **argv)
{
	struct daxfs_err err = { 0 };
	struct daxfs_stat st;
	struct daxfs *fs;
	uint8_t diff[32];

	if (argc != 4 || strlen(argv[3]) != 64)
		return 2;
	for (int i = 0; i < 32; i++)
		sscanf(argv[3] + 2 * i, "%2hhx", &diff[i]);
	if (tu_attach(argv[1], atoi(argv[2]), 2000, &fs) < 0)
		return 2;
	if (daxfs_layer_open(fs, diff, &L, &err) < 0) {
		printf("error: %s\n", err.msg);
		daxfs_close(fs);
		return 1;
	}
	daxfs_stat(L, DAXFS_ROOT_INO, &st);
	printf(".\td\t%o\t%u\t%u\t-\t0\t\t0\t0:0\t%u\t\n", st.mode & 07777, st.uid, st.gid,
	       st.flags);
	dump(DAXFS_ROOT_INO, "");
	daxfs_layer_close(L);
	daxfs_close(fs);
	return 0;
}
