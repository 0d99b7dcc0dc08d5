/* The allocation races of test_stress.c (layer builds with dedup,
 * evictions, rebuilds, contested claims) with threads instead of
 * processes: each thread attaches as its own host, all over one mapping of
 * the region, so that ThreadSanitizer sees every access (make test-tsan). */
#define STRESS_THREADS 1
#define STRESS_PROG "test_alloc_mt"
#define STRESS_HASH 0
#define STRESS_LAYERS 1
#include "test_stress.c"
