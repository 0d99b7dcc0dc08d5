/* CRC-32C (Castagnoli), as used for daxfs metadata checksums.
 *
 * Standard convention: reflected polynomial 0x82F63B78, initial value and
 * final value both inverted inside the function, so a fresh checksum starts
 * from 0 and results chain:
 *
 *	crc32c(crc32c(0, a, n), b, m) == crc32c(0, a || b, n + m)
 *
 * crc32c(0, "123456789", 9) == 0xE3069283.
 *
 * All functions are thread-safe and may be called without any setup. */
#ifndef DAXFS_CRC32C_H
#define DAXFS_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Checksum LEN bytes at BUF, continuing from CRC (0 to start). Uses the
 * SSE4.2 crc32 instruction when the CPU has it, a table otherwise. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* Testing hook: always the portable table implementation. Gives the same
 * result as crc32c(). */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* Testing hook: 1 if crc32c() uses the hardware instruction, else 0. */
int crc32c_hw_enabled(void);

#endif
