/* Cache maintenance: mode selection, names, and that flushing or
 * invalidating a buffer never changes what it holds. */
#include "check.h"
#include "cache.h"

#include <errno.h>
#include <stdint.h>

static unsigned char buf[3 * 4096 + 100];

static void fill(unsigned char *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)(i * 31u + seed);
}

static int verify(const unsigned char *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != (unsigned char)(i * 31u + seed))
			return 0;
	return 1;
}

/* Flush/invalidate/fence over aligned, unaligned and empty ranges. */
static int exercise(unsigned seed)
{
	fill(buf, sizeof(buf), seed);
	cache_flush(buf, sizeof(buf));
	cache_fence();
	cache_flush(buf + 3, 1);
	cache_flush(buf + 63, 2);
	cache_flush(buf + 1, 0);
	cache_invalidate(buf, sizeof(buf));
	cache_invalidate(buf + 4095, 3);
	cache_invalidate(buf, 0);
	cache_fence();
	if (!verify(buf, sizeof(buf), seed))
		return 0;
	/* Stores after an invalidate must stick too. */
	buf[100] ^= 0xff;
	cache_flush(buf + 100, 1);
	cache_fence();
	cache_invalidate(buf + 100, 1);
	buf[100] ^= 0xff;
	return verify(buf, sizeof(buf), seed);
}

TEST(default_is_coherent)
{
	CHECK(cache_get_mode() == CACHE_COHERENT);
	CHECK(strcmp(cache_mode_name(), "coherent") == 0);
}

TEST(coherent_mode)
{
	CHECK_RC(cache_init(CACHE_COHERENT), 0);
	CHECK(cache_get_mode() == CACHE_COHERENT);
	CHECK(strcmp(cache_mode_name(), "coherent") == 0);
	CHECK(exercise(7));
}

TEST(noncoherent_mode)
{
	int rc = cache_init(CACHE_NONCOHERENT);

#if defined(__x86_64__)
	CHECK_RC(rc, 0);
	CHECK(cache_get_mode() == CACHE_NONCOHERENT);
	CHECK(strncmp(cache_mode_name(), "noncoherent/", 12) == 0);
	CHECK(cache_line_size() >= 16);
	CHECK((cache_line_size() & (cache_line_size() - 1)) == 0);
	printf("info: %s, line %zu\n", cache_mode_name(), cache_line_size());
	CHECK(exercise(11));
#else
	CHECK_RC(rc, -ENOTSUP);
	CHECK(cache_get_mode() == CACHE_COHERENT);
#endif
}

TEST(switch_back)
{
	(void)cache_init(CACHE_NONCOHERENT);	/* may be -ENOTSUP off x86 */
	CHECK_RC(cache_init(CACHE_COHERENT), 0);
	CHECK(strcmp(cache_mode_name(), "coherent") == 0);
	CHECK(exercise(13));
}

TEST(bad_mode)
{
	const char *before = cache_mode_name();

	CHECK_RC(cache_init((enum cache_mode)42), -EINVAL);
	CHECK(cache_mode_name() == before);
}

CHECK_MAIN_BEGIN("test_cache")
	RUN(default_is_coherent);
	RUN(coherent_mode);
	RUN(noncoherent_mode);
	RUN(switch_back);
	RUN(bad_mode);
CHECK_MAIN_END
