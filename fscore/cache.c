/* CPU cache maintenance for possibly non-coherent shared memory.
 *
 * The active policy is one pointer to a constant description, swapped
 * atomically by cache_init(), so a reader always sees a consistent
 * flush/invalidate/fence triple even if the mode is switched under it.
 * cache.h handles the coherent case inline, behind cache_noncoherent
 * (stored after the policy); the functions here reload the policy. */
#include "cache.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

enum cache_insn {
	INSN_NONE,
	INSN_CLFLUSH,
	INSN_CLFLUSHOPT,
	INSN_CLWB,
};

struct cache_policy {
	enum cache_mode mode;
	enum cache_insn flush;
	enum cache_insn inval;
	const char *name;
};

static const struct cache_policy policy_coherent = {
	CACHE_COHERENT, INSN_NONE, INSN_NONE, "coherent"
};

#if defined(__x86_64__)
static const struct cache_policy policy_clflush = {
	CACHE_NONCOHERENT, INSN_CLFLUSH, INSN_CLFLUSH, "noncoherent/clflush"
};
static const struct cache_policy policy_clflushopt = {
	CACHE_NONCOHERENT, INSN_CLFLUSHOPT, INSN_CLFLUSHOPT,
	"noncoherent/clflushopt"
};
static const struct cache_policy policy_clwb_clflush = {
	CACHE_NONCOHERENT, INSN_CLWB, INSN_CLFLUSH, "noncoherent/clwb+clflush"
};
static const struct cache_policy policy_clwb_clflushopt = {
	CACHE_NONCOHERENT, INSN_CLWB, INSN_CLFLUSHOPT,
	"noncoherent/clwb+clflushopt"
};
#endif

static _Atomic(const struct cache_policy *) cache_policy = &policy_coherent;
static atomic_size_t cache_line = 64;
atomic_int cache_noncoherent;

static const struct cache_policy *policy_get(void)
{
	return atomic_load_explicit(&cache_policy, memory_order_acquire);
}

#if defined(__x86_64__)

#define CPUID1_EDX_CLFLUSH	(1u << 19)
#define CPUID7_EBX_CLFLUSHOPT	(1u << 23)
#define CPUID7_EBX_CLWB		(1u << 24)

/* Pick the best instructions this CPU offers and its flush line size.
 * Returns NULL if even clflush is missing. */
static const struct cache_policy *policy_probe(size_t *line)
{
	unsigned int a, b, c, d;
	int has_opt = 0, has_clwb = 0;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(d & CPUID1_EDX_CLFLUSH))
		return NULL;
	/* EBX[15:8] is the clflush line size in 8-byte units. */
	*line = ((b >> 8) & 0xff) * 8;
	if (*line == 0 || (*line & (*line - 1)))
		*line = 64;

	if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
		has_opt = !!(b & CPUID7_EBX_CLFLUSHOPT);
		has_clwb = !!(b & CPUID7_EBX_CLWB);
	}
	if (has_clwb)
		return has_opt ? &policy_clwb_clflushopt : &policy_clwb_clflush;
	return has_opt ? &policy_clflushopt : &policy_clflush;
}

/* Inline asm rather than intrinsics: it needs no target flags, and the
 * "memory" clobber stops the compiler from moving the caller's stores
 * past the flush. */
static void line_op(enum cache_insn insn, uintptr_t addr)
{
	const volatile char *p = (const volatile char *)addr;

	switch (insn) {
	case INSN_CLFLUSH:
		__asm__ volatile("clflush %0" : : "m"(*p) : "memory");
		break;
	case INSN_CLFLUSHOPT:
		__asm__ volatile("clflushopt %0" : : "m"(*p) : "memory");
		break;
	case INSN_CLWB:
		__asm__ volatile("clwb %0" : : "m"(*p) : "memory");
		break;
	case INSN_NONE:
		break;
	}
}

static void range_op(enum cache_insn insn, const void *p, size_t len)
{
	size_t line = atomic_load_explicit(&cache_line, memory_order_relaxed);
	uintptr_t addr = (uintptr_t)p & ~(uintptr_t)(line - 1);
	uintptr_t end = (uintptr_t)p + len;

	for (; addr < end; addr += line)
		line_op(insn, addr);
}

/* mfence orders clflush/clflushopt/clwb against both later stores and
 * later loads, so one fence serves publication and consumption. */
static void full_fence(void)
{
	__asm__ volatile("mfence" : : : "memory");
}

#endif /* __x86_64__ */

int cache_init(enum cache_mode mode)
{
	switch (mode) {
	case CACHE_COHERENT:
		atomic_store_explicit(&cache_policy, &policy_coherent,
				      memory_order_release);
		atomic_store_explicit(&cache_noncoherent, 0, memory_order_release);
		return 0;
	case CACHE_NONCOHERENT:
#if defined(__x86_64__)
	{
		size_t line = 64;
		const struct cache_policy *pol = policy_probe(&line);

		if (!pol)
			return -ENOTSUP;
		/* Publish the line size before the policy that uses it. */
		atomic_store_explicit(&cache_line, line, memory_order_relaxed);
		atomic_store_explicit(&cache_policy, pol,
				      memory_order_release);
		atomic_store_explicit(&cache_noncoherent, 1, memory_order_release);
		return 0;
	}
#else
		return -ENOTSUP;
#endif
	}
	return -EINVAL;
}

enum cache_mode cache_get_mode(void)
{
	return policy_get()->mode;
}

const char *cache_mode_name(void)
{
	return policy_get()->name;
}

size_t cache_line_size(void)
{
	return atomic_load_explicit(&cache_line, memory_order_relaxed);
}

void cache_flush_lines(const void *p, size_t len)
{
#if defined(__x86_64__)
	const struct cache_policy *pol = policy_get();

	if (pol->flush != INSN_NONE && len)
		range_op(pol->flush, p, len);
#else
	(void)p;
	(void)len;
#endif
}

void cache_invalidate_lines(const void *p, size_t len)
{
#if defined(__x86_64__)
	const struct cache_policy *pol = policy_get();

	if (pol->inval == INSN_NONE || !len)
		return;
	range_op(pol->inval, p, len);
	/* The contract promises the *next* loads come from memory; without
	 * a fence the CPU may satisfy them before the lines are evicted. */
	full_fence();
#else
	(void)p;
	(void)len;
#endif
}

void cache_fence(void)
{
#if defined(__x86_64__)
	if (policy_get()->mode == CACHE_NONCOHERENT) {
		full_fence();
		return;
	}
#endif
	atomic_thread_fence(memory_order_seq_cst);
}
