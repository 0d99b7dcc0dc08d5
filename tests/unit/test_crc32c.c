/* CRC-32C: published check values, chaining, and table == hardware. */
#include "check.h"
#include "crc32c.h"

#include <stdint.h>

/* Small deterministic generator so failures reproduce. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng_next(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void rng_fill(unsigned char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)rng_next();
}

TEST(check_value)
{
	CHECK(crc32c(0, "123456789", 9) == 0xE3069283u);
	CHECK(crc32c_sw(0, "123456789", 9) == 0xE3069283u);
}

TEST(empty_is_identity)
{
	CHECK(crc32c(0, "", 0) == 0);
	CHECK(crc32c(0x12345678u, NULL, 0) == 0x12345678u);
	CHECK(crc32c_sw(0xdeadbeefu, NULL, 0) == 0xdeadbeefu);
}

TEST(zeros_and_ones)
{
	unsigned char buf[32];

	memset(buf, 0, sizeof(buf));
	CHECK(crc32c(0, buf, sizeof(buf)) == 0x8A9136AAu);
	CHECK(crc32c_sw(0, buf, sizeof(buf)) == 0x8A9136AAu);
	memset(buf, 0xff, sizeof(buf));
	CHECK(crc32c(0, buf, sizeof(buf)) == 0x62A8AB43u);
	CHECK(crc32c_sw(0, buf, sizeof(buf)) == 0x62A8AB43u);
}

TEST(chaining_matches_one_shot)
{
	unsigned char buf[4096];

	for (int iter = 0; iter < 500; iter++) {
		size_t len = (size_t)(rng_next() % sizeof(buf));
		size_t split = len ? (size_t)(rng_next() % (len + 1)) : 0;
		uint32_t whole, part;

		rng_fill(buf, len);
		whole = crc32c(0, buf, len);
		part = crc32c(crc32c(0, buf, split), buf + split, len - split);
		CHECK(whole == part);
		part = crc32c_sw(crc32c_sw(0, buf, split), buf + split,
				 len - split);
		CHECK(whole == part);
	}
}

TEST(sw_matches_dispatch)
{
	unsigned char buf[8192 + 8];

	/* Vary length and starting alignment to exercise head/tail code. */
	for (int iter = 0; iter < 1000; iter++) {
		size_t off = (size_t)(rng_next() % 8);
		size_t len = (size_t)(rng_next() % 8192);
		uint32_t seed = (uint32_t)rng_next();

		rng_fill(buf + off, len);
		CHECK(crc32c(seed, buf + off, len) ==
		      crc32c_sw(seed, buf + off, len));
	}
	printf("info: crc32c hardware path %s\n",
	       crc32c_hw_enabled() ? "enabled" : "not available");
}

CHECK_MAIN_BEGIN("test_crc32c")
	RUN(check_value);
	RUN(empty_is_identity);
	RUN(zeros_and_ones);
	RUN(chaining_matches_one_shot);
	RUN(sw_matches_dispatch);
CHECK_MAIN_END
