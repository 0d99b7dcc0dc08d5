/* Layer short ids: the names of layers in the FUSE view and in overlay
 * lowerdir options. */
#include <errno.h>
#include <string.h>

#include "daxfs.h"

void daxfs_short_id(uint64_t serial, char out[16])
{
	char tmp[16];
	int n = 0, k = 0;

	do {
		tmp[n++] = "0123456789abcdefghijklmnopqrstuvwxyz"[serial % 36];
		serial /= 36;
	} while (serial);
	while (n)
		out[k++] = tmp[--n];
	out[k] = 0;
}

int daxfs_parse_short_id(const char *s, uint64_t *serial)
{
	uint64_t v = 0;

	if (!*s || strlen(s) > 12)
		return -ENOENT;
	for (; *s; s++) {
		int d = *s >= '0' && *s <= '9' ? *s - '0' :
			*s >= 'a' && *s <= 'z' ? *s - 'a' + 10 : -1;

		if (d < 0)
			return -ENOENT;
		v = v * 36 + (uint64_t)d;
	}
	*serial = v;
	return 0;
}
