/* CRC-32C: slice-by-8 tables, with an SSE4.2 fast path on x86-64.
 *
 * The tables and the choice of implementation are set up once, on first
 * use, under pthread_once so concurrent first callers are safe. */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define CRC32C_POLY 0x82F63B78u	/* reflected Castagnoli polynomial */

static uint32_t crc_table[8][256];
static int crc_use_hw;
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc32c_build_tables(void)
{
	for (uint32_t n = 0; n < 256; n++) {
		uint32_t c = n;

		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1u)));
		crc_table[0][n] = c;
	}
	/* table[k][n]: CRC of byte n followed by k zero bytes, which lets
	 * eight input bytes be folded in with eight independent lookups. */
	for (int k = 1; k < 8; k++)
		for (int n = 0; n < 256; n++) {
			uint32_t c = crc_table[k - 1][n];

			crc_table[k][n] = (c >> 8) ^ crc_table[0][c & 0xff];
		}
}

static void crc32c_setup(void)
{
	crc32c_build_tables();
#if defined(__x86_64__)
	__builtin_cpu_init();
	crc_use_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
}

static void crc32c_ensure_setup(void)
{
	pthread_once(&crc_once, crc32c_setup);
}

/* Table-driven core on the already-inverted register value. */
static uint32_t crc32c_sw_raw(uint32_t c, const unsigned char *p, size_t len)
{
	/* The 8-byte step relies on little-endian loads. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	while (len >= 8) {
		uint64_t w;
		uint32_t lo, hi;

		memcpy(&w, p, 8);	/* unaligned-safe load */
		lo = c ^ (uint32_t)w;
		hi = (uint32_t)(w >> 32);
		c = crc_table[7][lo & 0xff] ^
		    crc_table[6][(lo >> 8) & 0xff] ^
		    crc_table[5][(lo >> 16) & 0xff] ^
		    crc_table[4][lo >> 24] ^
		    crc_table[3][hi & 0xff] ^
		    crc_table[2][(hi >> 8) & 0xff] ^
		    crc_table[1][(hi >> 16) & 0xff] ^
		    crc_table[0][hi >> 24];
		p += 8;
		len -= 8;
	}
#endif
	while (len--)
		c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
	return c;
}

uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	crc32c_ensure_setup();
	return ~crc32c_sw_raw(~crc, buf, len);
}

#if defined(__x86_64__)
/* The crc32 instruction implements exactly the reflected CRC-32C step,
 * without the pre/post inversion, so it shares the convention above. */
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw_raw(uint32_t c, const unsigned char *p, size_t len)
{
	uint64_t c64;

	/* Align so the 8-byte loads do not straddle cache lines. */
	while (len && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8(c, *p++);
		len--;
	}
	c64 = c;
	while (len >= 8) {
		uint64_t w;

		memcpy(&w, p, 8);
		c64 = _mm_crc32_u64(c64, w);
		p += 8;
		len -= 8;
	}
	c = (uint32_t)c64;
	while (len--)
		c = _mm_crc32_u8(c, *p++);
	return c;
}
#endif

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	crc32c_ensure_setup();
#if defined(__x86_64__)
	if (crc_use_hw)
		return ~crc32c_hw_raw(~crc, buf, len);
#endif
	return ~crc32c_sw_raw(~crc, buf, len);
}

int crc32c_hw_enabled(void)
{
	crc32c_ensure_setup();
	return crc_use_hw;
}
