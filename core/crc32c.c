/* core/crc32c.c: CRC32C through Intel ISA-L (Debian's libisal). crc32_iscsi() works on the
 * inverted register and takes an int length: the standard pre/post inversion is done here and
 * long buffers are fed in pieces. */
#include "core/crc32c.h"

#include <isa-l/crc.h>
#include <limits.h>

uint32_t rs_crc32c(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    unsigned int reg = ~crc;

    while (len > 0) {
        size_t n = len > (size_t)(INT_MAX & ~4095) ? (size_t)(INT_MAX & ~4095) : len;
        /* crc32_iscsi does not write through its buffer pointer; its prototype lacks const. */
        reg = crc32_iscsi((unsigned char *)(uintptr_t)p, (int)n, reg);
        p += n;
        len -= n;
    }
    return ~reg;
}

const char *rs_crc32c_provider(void)
{
    return "ISA-L crc32_iscsi";
}
