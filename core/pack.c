/* core/pack.c: sub-byte packing of the int8 model file's weights
 * (docs/FORMAT-int8.md, "Weight encodings"), shared by the writer
 * (io/export.c) and the runtime's reader (runtime/load.c).
 *
 * The layout is one little-endian bit stream: code i of b bits occupies
 * stream bits i*b .. i*b + b - 1, its least significant bit first, and
 * stream bit p is bit (p mod 8) of byte p / 8. For b dividing 8 this is
 * "element j of a byte at bits j*b". The bits after the last code are 0. */
#include <stdint.h>
#include <string.h>

#include "core/internal.h"

size_t qat_packed_bytes(size_t n, int bits)
{
    /* n * bits / 8 rounded up, without forming n * bits (n may be huge) */
    return n / 8 * (size_t)bits + (n % 8 * (size_t)bits + 7) / 8;
}

void qat_pack_bits(uint8_t *dst, const uint8_t *codes, size_t n, int bits)
{
    size_t nb = qat_packed_bytes(n, bits);
    memset(dst, 0, nb);
    unsigned mask = (1u << bits) - 1u;
    size_t p = 0; /* stream bit of code i */
    for (size_t i = 0; i < n; i++, p += (size_t)bits) {
        unsigned v = (unsigned)codes[i] & mask;
        size_t byte = p >> 3;
        unsigned off = (unsigned)(p & 7);
        /* a code of <= 8 bits spans at most two bytes */
        dst[byte] |= (uint8_t)(v << off);
        if (off + (unsigned)bits > 8) dst[byte + 1] |= (uint8_t)(v >> (8 - off));
    }
}

void qat_unpack_bits(uint8_t *codes, const uint8_t *src, size_t n, int bits)
{
    unsigned mask = (1u << bits) - 1u;
    size_t p = 0;
    for (size_t i = 0; i < n; i++, p += (size_t)bits) {
        size_t byte = p >> 3;
        unsigned off = (unsigned)(p & 7);
        unsigned v = (unsigned)src[byte] >> off;
        if (off + (unsigned)bits > 8) v |= (unsigned)src[byte + 1] << (8 - off);
        codes[i] = (uint8_t)(v & mask);
    }
}

int qat_packed_padding_ok(const uint8_t *src, size_t n, int bits)
{
    size_t used = n % 8 * (size_t)bits % 8; /* bits used in the last byte, 0: all */
    if (!used) return 1;
    size_t nb = qat_packed_bytes(n, bits);
    return (src[nb - 1] >> used) == 0;
}

int qat_weight_fits_bits(int w, int bits)
{
    if (bits == 1) return w == -1 || w == 1;
    return w >= -(1 << (bits - 1)) && w <= (1 << (bits - 1)) - 1;
}

long long qat_pack_weights(uint8_t *dst, const int8_t *w, size_t n, int bits)
{
    for (size_t i = 0; i < n; i++)
        if (!qat_weight_fits_bits(w[i], bits)) return (long long)i;
    unsigned mask = (1u << bits) - 1u;
    size_t nb = qat_packed_bytes(n, bits);
    memset(dst, 0, nb);
    size_t p = 0;
    for (size_t i = 0; i < n; i++, p += (size_t)bits) {
        /* 1 bit: +1 -> 1, -1 -> 0; else the low bits of two's complement */
        unsigned v = bits == 1 ? (w[i] > 0) : ((unsigned)(int)w[i] & mask);
        size_t byte = p >> 3;
        unsigned off = (unsigned)(p & 7);
        dst[byte] |= (uint8_t)(v << off);
        if (off + (unsigned)bits > 8) dst[byte + 1] |= (uint8_t)(v >> (8 - off));
    }
    return -1;
}

void qat_unpack_weights(int8_t *w, const uint8_t *src, size_t n, int bits)
{
    unsigned mask = (1u << bits) - 1u, sign = 1u << (bits - 1);
    size_t p = 0;
    for (size_t i = 0; i < n; i++, p += (size_t)bits) {
        size_t byte = p >> 3;
        unsigned off = (unsigned)(p & 7);
        unsigned v = (unsigned)src[byte] >> off;
        if (off + (unsigned)bits > 8) v |= (unsigned)src[byte + 1] << (8 - off);
        v &= mask;
        if (bits == 1) w[i] = v ? 1 : -1;
        else w[i] = (int8_t)((int)(v ^ sign) - (int)sign); /* sign-extend b bits */
    }
}

int qat_index_bits(int k)
{
    int b = 1;
    while (b < 8 && (1 << b) < k) b++;
    return b;
}
