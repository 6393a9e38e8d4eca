/* core/crc32c.h: CRC32C (Castagnoli, iSCSI polynomial 0x1EDC6F41), as carried by the bulk
 * contract's ChecksummedData and Chunk.crc32c. The provider (Intel ISA-L's crc32_iscsi, which
 * dispatches to its fastest kernel for the CPU at load time) lives in core/crc32c.c alone. */
#ifndef RS_CORE_CRC32C_H
#define RS_CORE_CRC32C_H
#include <stddef.h>
#include <stdint.h>

/* Continues a CRC32C: start with crc = 0 (the CRC of no bytes), pass each piece in order; the
 * result is the standard CRC32C of everything passed (rs_crc32c(0, "123456789", 9) ==
 * 0xE3069283). */
uint32_t rs_crc32c(uint32_t crc, const void *data, size_t len);

/* One line naming the provider, for --version and the startup log. */
const char *rs_crc32c_provider(void);

#endif /* RS_CORE_CRC32C_H */
