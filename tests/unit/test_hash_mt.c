/* The hash races of test_stress.c with threads instead of processes: each
 * thread attaches as its own host, all over one mapping of the region, so
 * that ThreadSanitizer sees every access (make test-tsan). */
#define STRESS_THREADS 1
#define STRESS_PROG "test_hash_mt"
#define STRESS_HASH 1
#define STRESS_LAYERS 0
#include "test_stress.c"
