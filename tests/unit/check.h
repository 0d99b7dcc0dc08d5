/* Minimal test harness shared by the unit tests.
 *
 * A test binary defines cases with TEST(name) and lists them in main() with
 * RUN(name).  Each case prints "PASS: <binary>/<name>" or "FAIL: ..." on its
 * own line; tests/run.sh counts those lines.  A failed CHECK ends the case. */
#ifndef DAXFS_TEST_CHECK_H
#define DAXFS_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int check_failed;
extern const char *check_prog;

#define TEST(name) static void test_##name(void)

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #cond);                          \
			check_failed = 1;                                  \
			return;                                            \
		}                                                          \
	} while (0)

/* CHECK_RC(expr, want): expr must return exactly want (0 or -errno). */
#define CHECK_RC(expr, want)                                               \
	do {                                                               \
		long _rc = (long)(expr);                                   \
		if (_rc != (long)(want)) {                                 \
			fprintf(stderr, "%s:%d: %s returned %ld, want %ld\n", \
				__FILE__, __LINE__, #expr, _rc, (long)(want)); \
			check_failed = 1;                                  \
			return;                                            \
		}                                                          \
	} while (0)

#define RUN(name)                                                          \
	do {                                                               \
		check_failed = 0;                                          \
		test_##name();                                             \
		printf("%s: %s/%s\n", check_failed ? "FAIL" : "PASS",     \
		       check_prog, #name);                                 \
		fflush(stdout);                                            \
		check_total_failed += check_failed;                        \
	} while (0)

#define CHECK_MAIN_BEGIN(prog)                                             \
	int check_failed;                                                  \
	const char *check_prog = prog;                                     \
	int main(int argc, char **argv)                                    \
	{                                                                  \
		int check_total_failed = 0;                                \
		(void)argc;                                                \
		(void)argv;

#define CHECK_MAIN_END                                                     \
		return check_total_failed ? 1 : 0;                         \
	}

#endif
