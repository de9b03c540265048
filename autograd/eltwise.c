/* Elementwise kernels of ReLU, 2x2 max pooling and batch normalisation
 * (autograd/kernels.h): a portable version, an AVX-512 version and an AVX2
 * version of each, performing the same operations in the same order, so
 * they give the same bits. The portable versions are the reference; GCC
 * does not vectorise their selects (it keeps the branches under
 * -ftrapping-math), which is why the SIMD versions exist. */
#include <stdint.h>
#include <string.h>

#include "autograd/internal.h"
#include "autograd/kernels.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_AVX512 1
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f")))
#else
#define HAVE_AVX512 0
#endif

#define LANES QAT_BN_LANES /* double accumulator lanes of the BN sums */

/* ---- portable ---- */

static void relu_fwd_ref(float *y, const float *x, size_t n) /* y may be x */
{
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void relu_bwd_ref(float *restrict dx, const float *restrict y, const float *restrict dy,
                         size_t n, int fresh)
{
    /* -0.0f is the exact identity of addition: dx is unchanged where y <= 0 */
    if (fresh)
        for (size_t i = 0; i < n; i++) dx[i] = 0.0f + (y[i] > 0.0f ? dy[i] : -0.0f);
    else
        for (size_t i = 0; i < n; i++) dx[i] += y[i] > 0.0f ? dy[i] : -0.0f;
}

static void maxpool2_fwd_ref(float *restrict y, unsigned char *restrict win, const float *restrict x,
                             int W, int OH, int OW)
{
    for (int oh = 0; oh < OH; oh++) {
        const float *r0 = x + (size_t)2 * oh * W, *r1 = r0 + W;
        for (int ow = 0; ow < OW; ow++) {
            float m = r0[2 * ow], v;
            int j = 0;
            v = r0[2 * ow + 1];
            j = v > m ? 1 : j;
            m = v > m ? v : m;
            v = r1[2 * ow];
            j = v > m ? 2 : j;
            m = v > m ? v : m;
            v = r1[2 * ow + 1];
            j = v > m ? 3 : j;
            m = v > m ? v : m;
            y[(size_t)oh * OW + ow] = m;
            if (win) win[(size_t)oh * OW + ow] = (unsigned char)j;
        }
    }
}

static void maxpool2_bwd_fresh_ref(float *restrict dx, const float *restrict dy,
                                   const unsigned char *restrict win, int H, int W, int OH, int OW)
{
    for (int oh = 0; oh < OH; oh++) {
        float *r0 = dx + (size_t)2 * oh * W, *r1 = r0 + W;
        for (int ow = 0; ow < OW; ow++) {
            float v = dy[(size_t)oh * OW + ow];
            int j = win[(size_t)oh * OW + ow];
            r0[2 * ow] = 0.0f + (j == 0 ? v : -0.0f);
            r0[2 * ow + 1] = 0.0f + (j == 1 ? v : -0.0f);
            r1[2 * ow] = 0.0f + (j == 2 ? v : -0.0f);
            r1[2 * ow + 1] = 0.0f + (j == 3 ? v : -0.0f);
        }
        for (int w = 2 * OW; w < W; w++) r0[w] = r1[w] = 0.0f;
    }
    for (int h = 2 * OH; h < H; h++) memset(dx + (size_t)h * W, 0, (size_t)W * sizeof(float));
}

static void acc_sum_ref(double *restrict acc, const float *restrict p, size_t n)
{
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += (double)p[i + j];
    for (int j = 0; i < n; i++, j++) acc[j] += (double)p[i];
}

static void acc_sqdev_ref(double *restrict acc, const float *restrict p, size_t n, double mu)
{
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            double d = (double)p[i + j] - mu;
            acc[j] += d * d;
        }
    for (int j = 0; i < n; i++, j++) {
        double d = (double)p[i] - mu;
        acc[j] += d * d;
    }
}

static void acc_dy_ref(double *restrict s, double *restrict t, const float *restrict dy,
                       const float *restrict x, size_t n, float mean, float is)
{
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float h = (x[i + j] - mean) * is;
            s[j] += (double)dy[i + j];
            t[j] += (double)dy[i + j] * (double)h;
        }
    for (int j = 0; i < n; i++, j++) {
        float h = (x[i] - mean) * is;
        s[j] += (double)dy[i];
        t[j] += (double)dy[i] * (double)h;
    }
}

static void bn_apply_ref(float *restrict y, const float *restrict x, size_t n, float mean, float is,
                         float g, float b)
{
    for (size_t i = 0; i < n; i++) y[i] = g * ((x[i] - mean) * is) + b;
}

static void bn_bwd_ref(float *restrict dx, const float *restrict dy, const float *restrict x,
                       size_t n, float mean, float is, float gi, float mdy, float mdyx, int fresh)
{
    if (fresh)
        for (size_t i = 0; i < n; i++) dx[i] = 0.0f + gi * (dy[i] - mdy - ((x[i] - mean) * is) * mdyx);
    else
        for (size_t i = 0; i < n; i++) dx[i] += gi * (dy[i] - mdy - ((x[i] - mean) * is) * mdyx);
}

static void interleave2_ref(float *dst, ptrdiff_t ds, const float *e, const float *o, ptrdiff_t ss, int rows,
                            int n, int fresh)
{
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < n; c++) {
            const float *src = c & 1 ? o : e;
            float v = src ? src[r * ss + (c >> 1)] : -0.0f; /* -0.0f: adds nothing, -0.0 included */
            if (fresh)
                dst[r * ds + c] = 0.0f + v;
            else
                dst[r * ds + c] += v;
        }
}

static void build_phases_ref(float *dst, ptrdiff_t ps, const float *x, int H, int W, int s, int pt,
                             int pl, int Hq, int Wq, int na, int nb)
{
    for (int a = 0; a < na; a++)
        for (int b = 0; b < nb; b++) {
            float *o = dst + (ptrdiff_t)(a * nb + b) * ps;
            for (int i = 0; i < Hq; i++)
                for (int j = 0; j < Wq; j++) {
                    int r = s * i + a - pt, c = s * j + b - pl;
                    o[(size_t)i * Wq + j] = r >= 0 && r < H && c >= 0 && c < W ? x[(size_t)r * W + c] : 0.0f;
                }
            for (ptrdiff_t k = (ptrdiff_t)Hq * Wq; k < ps; k++) o[k] = 0.0f;
        }
}

/* ---- AVX-512 ---- */

#if HAVE_AVX512
static __mmask16 first(size_t n) /* lanes [0, n), n <= 16 */
{
    return (__mmask16)(n >= 16 ? 0xffffu : (1u << n) - 1u);
}

/* Masked loads and stores cost about twice the plain ones on Zen 5, and
 * the hardware prefetcher does not keep these streams fed (a cold 6 MB
 * pass ran 2.7x faster with software prefetch): full vectors use plain
 * accesses, and every input stream is prefetched PFD floats ahead. */
#define PFD 256

static inline AVX512 __m512 ld(__mmask16 k, const float *p)
{
    return k == 0xffff ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(k, p);
}

static inline AVX512 void st(float *p, __mmask16 k, __m512 v)
{
    if (k == 0xffff)
        _mm512_storeu_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, k, v);
}

/* a prefetch of p + off floats (the address is formed from an integer: it
 * may lie past the array) */
static inline AVX512 void pf_at(const float *p, ptrdiff_t off)
{
    _mm_prefetch((const char *)(uintptr_t)((uintptr_t)p + (uintptr_t)(off * (ptrdiff_t)sizeof(float))),
                 _MM_HINT_T0);
}

static inline AVX512 void pf(const float *p) { pf_at(p, PFD); }

static AVX512 void relu_fwd_avx512(float *y, const float *x, size_t n)
{
    const __m512 z = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = first(n - i);
        pf(x + i);
        __m512 v = ld(k, x + i);
        __mmask16 pos = _mm512_cmp_ps_mask(v, z, _CMP_GT_OQ);
        st(y + i, k, _mm512_maskz_mov_ps(pos, v));
    }
}

static AVX512 void relu_bwd_avx512(float *dx, const float *y, const float *dy, size_t n, int fresh)
{
    const __m512 z = _mm512_setzero_ps(), nz = _mm512_set1_ps(-0.0f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = first(n - i);
        pf(y + i);
        pf(dy + i);
        if (!fresh) pf(dx + i);
        __mmask16 pos = _mm512_cmp_ps_mask(ld(k, y + i), z, _CMP_GT_OQ);
        __m512 v = _mm512_mask_blend_ps(pos, nz, ld(k, dy + i));
        __m512 base = fresh ? z : ld(k, dx + i);
        st(dx + i, k, _mm512_add_ps(base, v));
    }
}

/* lanes 2l (even) and 2l+1 (odd) of the 32 floats a:b */
static AVX512 void deinterleave(__m512 a, __m512 b, __m512 *even, __m512 *odd)
{
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    *even = _mm512_permutex2var_ps(a, ie, b);
    *odd = _mm512_permutex2var_ps(a, io, b);
}

static AVX512 void maxpool2_fwd_avx512(float *y, unsigned char *win, const float *x, int W, int OH,
                                       int OW)
{
    for (int oh = 0; oh < OH; oh++) {
        const float *r0 = x + (size_t)2 * oh * W, *r1 = r0 + W;
        for (int ow = 0; ow < OW; ow += 16) {
            int cnt = OW - ow < 16 ? OW - ow : 16;
            __mmask16 klo = first((size_t)(2 * cnt)), khi = first((size_t)(2 * cnt > 16 ? 2 * cnt - 16 : 0));
            __m512 e0, o0, e1, o1;
            /* the row pair two pairs on */
            pf_at(r0, 4 * (ptrdiff_t)W + 2 * ow);
            pf_at(r1, 4 * (ptrdiff_t)W + 2 * ow);
            deinterleave(_mm512_maskz_loadu_ps(klo, r0 + 2 * ow), _mm512_maskz_loadu_ps(khi, r0 + 2 * ow + 16),
                         &e0, &o0);
            deinterleave(_mm512_maskz_loadu_ps(klo, r1 + 2 * ow), _mm512_maskz_loadu_ps(khi, r1 + 2 * ow + 16),
                         &e1, &o1);
            __m512 m = e0;
            __m512i j = _mm512_setzero_si512();
            __mmask16 gt = _mm512_cmp_ps_mask(o0, m, _CMP_GT_OQ);
            j = _mm512_mask_blend_epi32(gt, j, _mm512_set1_epi32(1));
            m = _mm512_mask_blend_ps(gt, m, o0);
            gt = _mm512_cmp_ps_mask(e1, m, _CMP_GT_OQ);
            j = _mm512_mask_blend_epi32(gt, j, _mm512_set1_epi32(2));
            m = _mm512_mask_blend_ps(gt, m, e1);
            gt = _mm512_cmp_ps_mask(o1, m, _CMP_GT_OQ);
            j = _mm512_mask_blend_epi32(gt, j, _mm512_set1_epi32(3));
            m = _mm512_mask_blend_ps(gt, m, o1);
            _mm512_mask_storeu_ps(y + (size_t)oh * OW + ow, first((size_t)cnt), m);
            if (win) {
                unsigned char b[16];
                _mm_storeu_si128((__m128i *)(void *)b, _mm512_cvtepi32_epi8(j));
                memcpy(win + (size_t)oh * OW + ow, b, (size_t)cnt);
            }
        }
    }
}

static AVX512 void maxpool2_bwd_fresh_avx512(float *dx, const float *dy, const unsigned char *win,
                                             int H, int W, int OH, int OW)
{
    const __m512 z = _mm512_setzero_ps(), nz = _mm512_set1_ps(-0.0f);
    const __m512i ilo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i ihi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (int oh = 0; oh < OH; oh++) {
        float *r0 = dx + (size_t)2 * oh * W, *r1 = r0 + W;
        for (int ow = 0; ow < OW; ow += 16) {
            int cnt = OW - ow < 16 ? OW - ow : 16;
            unsigned char b[16] = {0};
            memcpy(b, win + (size_t)oh * OW + ow, (size_t)cnt);
            __m512i j = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)b));
            __m512 g = _mm512_maskz_loadu_ps(first((size_t)cnt), dy + (size_t)oh * OW + ow);
            __m512 v[4];
            for (int q = 0; q < 4; q++)
                v[q] = _mm512_add_ps(z, _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(j, _mm512_set1_epi32(q)),
                                                             nz, g));
            __mmask16 klo = first((size_t)(2 * cnt)), khi = first((size_t)(2 * cnt > 16 ? 2 * cnt - 16 : 0));
            _mm512_mask_storeu_ps(r0 + 2 * ow, klo, _mm512_permutex2var_ps(v[0], ilo, v[1]));
            _mm512_mask_storeu_ps(r0 + 2 * ow + 16, khi, _mm512_permutex2var_ps(v[0], ihi, v[1]));
            _mm512_mask_storeu_ps(r1 + 2 * ow, klo, _mm512_permutex2var_ps(v[2], ilo, v[3]));
            _mm512_mask_storeu_ps(r1 + 2 * ow + 16, khi, _mm512_permutex2var_ps(v[2], ihi, v[3]));
        }
        for (int w = 2 * OW; w < W; w++) r0[w] = r1[w] = 0.0f;
    }
    for (int h = 2 * OH; h < H; h++) memset(dx + (size_t)h * W, 0, (size_t)W * sizeof(float));
}

/* 8 floats from p (k of them, k may be 0 or more than 8; the rest 0) as
 * doubles */
static AVX512 __m512d load8_pd(const float *p, ptrdiff_t k)
{
    if (k >= 8) return _mm512_cvtps_pd(_mm256_loadu_ps(p));
    __m256 v = _mm512_castps512_ps256(_mm512_maskz_loadu_ps(first(k < 0 ? 0 : (size_t)k), p));
    return _mm512_cvtps_pd(v);
}

/* The sums keep 32 lanes in four registers (four independent chains):
 * register r, lane l takes the elements i = 8r + l mod 32. A masked tail
 * adds +0.0 to the unused lanes, which changes nothing: a lane's sum
 * starts at +0.0 and so is never -0.0. */
static AVX512 void acc_sum_avx512(double *acc, const float *p, size_t n)
{
    __m512d a[4];
    for (int r = 0; r < 4; r++) a[r] = _mm512_loadu_pd(acc + 8 * r);
    for (size_t i = 0; i < n; i += LANES) {
        pf(p + i);
        pf(p + i + 16);
        for (int r = 0; r < 4; r++) a[r] = _mm512_add_pd(a[r], load8_pd(p + i + 8 * r, (ptrdiff_t)(n - i) - 8 * r));
    }
    for (int r = 0; r < 4; r++) _mm512_storeu_pd(acc + 8 * r, a[r]);
}

static AVX512 void acc_sqdev_avx512(double *acc, const float *p, size_t n, double mu)
{
    __m512d a[4], m = _mm512_set1_pd(mu);
    for (int r = 0; r < 4; r++) a[r] = _mm512_loadu_pd(acc + 8 * r);
    for (size_t i = 0; i < n; i += LANES)
        for (int r = 0; r < 4; r++) {
            ptrdiff_t k = (ptrdiff_t)(n - i) - 8 * r;
            __m512d d = _mm512_sub_pd(load8_pd(p + i + 8 * r, k), m);
            /* unused lanes: (0 - mu)^2 must not be added */
            d = _mm512_maskz_mov_pd((__mmask8)first(k < 0 ? 0 : k > 8 ? 8 : (size_t)k), d);
            a[r] = _mm512_add_pd(a[r], _mm512_mul_pd(d, d));
        }
    for (int r = 0; r < 4; r++) _mm512_storeu_pd(acc + 8 * r, a[r]);
}

static AVX512 void acc_dy_avx512(double *s, double *t, const float *dy, const float *x, size_t n,
                                 float mean, float is)
{
    __m512d as[4], at[4];
    for (int r = 0; r < 4; r++) {
        as[r] = _mm512_loadu_pd(s + 8 * r);
        at[r] = _mm512_loadu_pd(t + 8 * r);
    }
    const __m512 mv = _mm512_set1_ps(mean), iv = _mm512_set1_ps(is);
    for (size_t i = 0; i < n; i += LANES)
        for (int r = 0; r < 4; r += 2) {
            /* 16 elements: h in float, then both halves in double */
            ptrdiff_t k = (ptrdiff_t)(n - i) - 8 * r;
            __mmask16 km = first(k < 0 ? 0 : k > 16 ? 16 : (size_t)k);
            pf(x + i + 8 * r);
            pf(dy + i + 8 * r);
            __m512 xv = ld(km, x + i + 8 * r);
            __m512 g = ld(km, dy + i + 8 * r); /* unused lanes: dy = 0, 0 * h = 0 */
            __m512 h = _mm512_mul_ps(_mm512_sub_ps(xv, mv), iv);
            __m512d g0 = _mm512_cvtps_pd(_mm512_castps512_ps256(g));
            __m512d g1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(g), 1)));
            __m512d h0 = _mm512_cvtps_pd(_mm512_castps512_ps256(h));
            __m512d h1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(h), 1)));
            as[r] = _mm512_add_pd(as[r], g0);
            as[r + 1] = _mm512_add_pd(as[r + 1], g1);
            at[r] = _mm512_add_pd(at[r], _mm512_mul_pd(g0, h0));
            at[r + 1] = _mm512_add_pd(at[r + 1], _mm512_mul_pd(g1, h1));
        }
    for (int r = 0; r < 4; r++) {
        _mm512_storeu_pd(s + 8 * r, as[r]);
        _mm512_storeu_pd(t + 8 * r, at[r]);
    }
}

static AVX512 void bn_apply_avx512(float *y, const float *x, size_t n, float mean, float is, float g,
                                   float b)
{
    const __m512 mv = _mm512_set1_ps(mean), iv = _mm512_set1_ps(is), gv = _mm512_set1_ps(g),
                 bv = _mm512_set1_ps(b);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = first(n - i);
        pf(x + i);
        __m512 h = _mm512_mul_ps(_mm512_sub_ps(ld(k, x + i), mv), iv);
        st(y + i, k, _mm512_add_ps(_mm512_mul_ps(gv, h), bv));
    }
}

static AVX512 void bn_bwd_avx512(float *dx, const float *dy, const float *x, size_t n, float mean,
                                 float is, float gi, float mdy, float mdyx, int fresh)
{
    const __m512 mv = _mm512_set1_ps(mean), iv = _mm512_set1_ps(is), gv = _mm512_set1_ps(gi),
                 d1 = _mm512_set1_ps(mdy), d2 = _mm512_set1_ps(mdyx), z = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = first(n - i);
        pf(x + i);
        pf(dy + i);
        __m512 h = _mm512_mul_ps(_mm512_sub_ps(ld(k, x + i), mv), iv);
        __m512 v = _mm512_sub_ps(_mm512_sub_ps(ld(k, dy + i), d1), _mm512_mul_ps(h, d2));
        v = _mm512_mul_ps(gv, v);
        __m512 base = fresh ? z : ld(k, dx + i);
        st(dx + i, k, _mm512_add_ps(base, v));
    }
}
static AVX512 void interleave2_avx512(float *dst, ptrdiff_t ds, const float *e, const float *o,
                                      ptrdiff_t ss, int rows, int n, int fresh)
{
    const __m512i ilo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i ihi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __m512 z = _mm512_setzero_ps(), nz = _mm512_set1_ps(-0.0f);
    for (int r = 0; r < rows; r++) {
        float *d = dst + r * ds;
        const float *er = e ? e + r * ss : NULL, *orow = o ? o + r * ss : NULL;
        if (er) pf_at(er, 4 * ss);
        if (orow) pf_at(orow, 4 * ss);
        for (int c = 0; c < n; c += 32) {
            int cnt = n - c < 32 ? n - c : 32, ne = (cnt + 1) / 2, no = cnt / 2;
            __m512 ev = er ? _mm512_maskz_loadu_ps(first((size_t)ne), er + c / 2) : nz;
            __m512 ov = orow ? _mm512_maskz_loadu_ps(first((size_t)no), orow + c / 2) : nz;
            __mmask16 klo = first((size_t)(cnt < 16 ? cnt : 16)), khi = first((size_t)(cnt > 16 ? cnt - 16 : 0));
            __m512 lo = _mm512_permutex2var_ps(ev, ilo, ov), hi = _mm512_permutex2var_ps(ev, ihi, ov);
            __m512 blo = fresh ? z : _mm512_maskz_loadu_ps(klo, d + c);
            __m512 bhi = fresh ? z : _mm512_maskz_loadu_ps(khi, d + c + 16);
            _mm512_mask_storeu_ps(d + c, klo, _mm512_add_ps(blo, lo));
            _mm512_mask_storeu_ps(d + c + 16, khi, _mm512_add_ps(bhi, hi));
        }
    }
}

/* lanes k of [0, 32) with lo <= k < hi */
static uint32_t lanes32(int lo, int hi)
{
    lo = lo < 0 ? 0 : lo;
    hi = hi > 32 ? 32 : hi;
    if (hi <= lo) return 0;
    uint32_t below_hi = hi == 32 ? 0xffffffffu : (1u << hi) - 1u;
    return below_hi & ~((1u << lo) - 1u);
}

/* 32 floats from row[base + k] where 0 <= base + k < W, else 0 (the
 * address is formed from an integer, so a base before the row start is
 * never a pointer out of bounds) */
static AVX512 void load_row32(const float *row, int base, int W, __m512 *lo, __m512 *hi)
{
    uint32_t m = lanes32(-base, W - base);
    const float *p = (const float *)(uintptr_t)((uintptr_t)row + (uintptr_t)((intptr_t)base * (intptr_t)sizeof(float)));
    *lo = _mm512_maskz_loadu_ps((__mmask16)(m & 0xffffu), p);
    *hi = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), p + 16);
}

static AVX512 void build_phases_avx512(float *dst, ptrdiff_t ps, const float *x, int H, int W, int s,
                                       int pt, int pl, int Hq, int Wq, int na, int nb)
{
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512 z = _mm512_setzero_ps();
    for (int i = 0; i < Hq; i++) /* source rows in order: s*i + a */
        for (int a = 0; a < na; a++) {
            int r = s * i + a - pt;
            const float *xr = x + (size_t)(r < 0 ? 0 : r) * W;
            int valid = r >= 0 && r < H;
            /* the source row 4 rows on */
            for (int c = 0; c < W; c += 16) pf_at(xr, 4 * (ptrdiff_t)W + c);
            float *o0 = dst + (ptrdiff_t)(a * nb) * ps + (size_t)i * Wq;
            if (s == 1) {
                for (int j = 0; j < Wq; j += 32) {
                    uint32_t k = lanes32(0, Wq - j);
                    __m512 lo = z, hi = z;
                    if (valid) load_row32(xr, j - pl, W, &lo, &hi);
                    _mm512_mask_storeu_ps(o0 + j, (__mmask16)(k & 0xffffu), lo);
                    _mm512_mask_storeu_ps(o0 + j + 16, (__mmask16)(k >> 16), hi);
                }
                continue;
            }
            /* s == 2: lanes k of source columns 2*j - pl + k; even lanes are
             * phase b = 0, odd lanes b = 1 */
            for (int j = 0; j < Wq; j += 16) {
                __mmask16 k = (__mmask16)(lanes32(0, Wq - j) & 0xffffu);
                __m512 lo = z, hi = z;
                if (valid) load_row32(xr, 2 * j - pl, W, &lo, &hi);
                _mm512_mask_storeu_ps(o0 + j, k, _mm512_permutex2var_ps(lo, ie, hi));
                if (nb > 1) _mm512_mask_storeu_ps(o0 + ps + j, k, _mm512_permutex2var_ps(lo, io, hi));
            }
        }
    for (int ph = 0; ph < na * nb; ph++)
        memset(dst + ph * ps + (ptrdiff_t)Hq * Wq, 0, (size_t)(ps - (ptrdiff_t)Hq * Wq) * sizeof(float));
}

#endif /* HAVE_AVX512 */

/* ---- AVX2 ----
 * The AVX-512 versions' operations on 8-float (4-double) vectors, for the
 * CPUs with AVX2 + FMA and no AVX-512F. A partial vector is read with a
 * masked load (the lanes off the mask read as 0 and are not accessed) and
 * written in pieces; a multiply and an add stay two operations
 * (the build has -ffp-contract=off: an FMA would change the bits). */

#if HAVE_AVX512 /* an x86 compiler: AVX2 too */
#define AVX2 __attribute__((target("avx2,fma")))

/* lanes [0, k) of 8 (k may be <= 0 or > 8) */
static inline AVX2 __m256i first8(ptrdiff_t k)
{
    int c = k < 0 ? 0 : k > 8 ? 8 : (int)k;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* the k floats at p (the rest 0); a plain load for a full vector, none for
 * an empty one */
static inline AVX2 __m256 ld8(const float *p, ptrdiff_t k)
{
    if (k >= 8) return _mm256_loadu_ps(p);
    return k > 0 ? _mm256_maskload_ps(p, first8(k)) : _mm256_setzero_ps();
}

/* the first k < 8 lanes of v to p, in pieces of 4, 2 and 1 floats: a
 * masked store costs twice as much on Zen 3 (a 28-float row copy: 6.3 vs
 * 3.2 ns) */
static inline AVX2 void st_part(float *p, ptrdiff_t k, __m256 v)
{
    __m128 q = _mm256_castps256_ps128(v);
    if (k & 4) {
        _mm_storeu_ps(p, q);
        p += 4;
        q = _mm256_extractf128_ps(v, 1);
    }
    if (k & 2) {
        _mm_storel_pi((__m64 *)(void *)p, q);
        p += 2;
        q = _mm_movehl_ps(q, q);
    }
    if (k & 1) _mm_store_ss(p, q);
}

static inline AVX2 void st8(float *p, ptrdiff_t k, __m256 v)
{
    if (k >= 8)
        _mm256_storeu_ps(p, v);
    else if (k > 0)
        st_part(p, k, v);
}

/* Each kernel is a step over one vector (k of its lanes in use) and a loop
 * that runs the full vectors through it with k = 8, a constant, so their
 * loads and stores are plain and unconditional, then the partial one:
 * 1.6x faster than a loop testing k at every step (BN apply over 64 28x28
 * planes in L2, Zen 3: 6.2 vs 9.6 us). */

static inline AVX2 void relu_fwd8(float *y, const float *x, ptrdiff_t k)
{
    __m256 v = ld8(x, k);
    st8(y, k, _mm256_and_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ), v)); /* else +0.0 */
}

static AVX2 void relu_fwd_avx2(float *y, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) relu_fwd8(y + i, x + i, 8);
    if (i < n) relu_fwd8(y + i, x + i, (ptrdiff_t)(n - i));
}

static inline AVX2 void relu_bwd8(float *dx, const float *y, const float *dy, ptrdiff_t k, int fresh)
{
    const __m256 z = _mm256_setzero_ps();
    __m256 pos = _mm256_cmp_ps(ld8(y, k), z, _CMP_GT_OQ);
    __m256 v = _mm256_blendv_ps(_mm256_set1_ps(-0.0f), ld8(dy, k), pos);
    st8(dx, k, _mm256_add_ps(fresh ? z : ld8(dx, k), v));
}

static AVX2 void relu_bwd_avx2(float *dx, const float *y, const float *dy, size_t n, int fresh)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) relu_bwd8(dx + i, y + i, dy + i, 8, fresh);
    if (i < n) relu_bwd8(dx + i, y + i, dy + i, (ptrdiff_t)(n - i), fresh);
}

/* lanes 2l (even) and 2l+1 (odd) of the 16 floats a:b: the pairs picked
 * inside each 128-bit half, then the 64-bit quarters put back in order */
static inline AVX2 void deinterleave8(__m256 a, __m256 b, __m256 *even, __m256 *odd)
{
    __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)), o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
    *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* its inverse: lo = a0 b0 .. a3 b3, hi = a4 b4 .. a7 b7 */
static inline AVX2 void interleave8(__m256 a, __m256 b, __m256 *lo, __m256 *hi)
{
    __m256 l = _mm256_unpacklo_ps(a, b), h = _mm256_unpackhi_ps(a, b);
    *lo = _mm256_permute2f128_ps(l, h, 0x20);
    *hi = _mm256_permute2f128_ps(l, h, 0x31);
}

/* the low bytes of the first cnt <= 8 int32 lanes of j, to p (in pieces,
 * as st_part: a memcpy of cnt bytes is a call) */
static inline AVX2 void store_bytes8(unsigned char *p, __m256i j, int cnt)
{
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                                          -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    __m256i b = _mm256_shuffle_epi8(j, pick);
    __m128i lo = _mm256_castsi256_si128(b), hi = _mm256_extracti128_si256(b, 1);
    uint64_t v;
    _mm_storel_epi64((__m128i *)(void *)&v, _mm_unpacklo_epi32(lo, hi));
    if (cnt >= 8) {
        memcpy(p, &v, 8);
        return;
    }
    if (cnt & 4) {
        uint32_t t = (uint32_t)v;
        memcpy(p, &t, 4);
        p += 4, v >>= 32;
    }
    if (cnt & 2) {
        uint16_t t = (uint16_t)v;
        memcpy(p, &t, 2);
        p += 2, v >>= 16;
    }
    if (cnt & 1) *p = (unsigned char)v;
}

/* cnt <= 8 bytes from p as the low bytes of 8 int32 lanes (the rest 0) */
static inline AVX2 __m256i load_bytes8(const unsigned char *p, int cnt)
{
    uint64_t v = 0;
    if (cnt >= 8) {
        memcpy(&v, p, 8);
    } else {
        int o = 0;
        if (cnt & 4) {
            uint32_t t;
            memcpy(&t, p, 4);
            v = t, o = 4;
        }
        if (cnt & 2) {
            uint16_t t;
            memcpy(&t, p + o, 2);
            v |= (uint64_t)t << (8 * o), o += 2;
        }
        if (cnt & 1) v |= (uint64_t)p[o] << (8 * o);
    }
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)&v));
}

/* cnt windows of the row pair r0, r1 */
static inline AVX2 void maxpool8(float *y, unsigned char *win, const float *r0, const float *r1, int cnt)
{
    __m256 e0, o0, e1, o1, m, gt;
    deinterleave8(ld8(r0, 2 * cnt), ld8(r0 + 8, 2 * cnt - 8), &e0, &o0);
    deinterleave8(ld8(r1, 2 * cnt), ld8(r1 + 8, 2 * cnt - 8), &e1, &o1);
    __m256i j = _mm256_setzero_si256();
    m = e0;
    gt = _mm256_cmp_ps(o0, m, _CMP_GT_OQ);
    j = _mm256_blendv_epi8(j, _mm256_set1_epi32(1), _mm256_castps_si256(gt));
    m = _mm256_blendv_ps(m, o0, gt);
    gt = _mm256_cmp_ps(e1, m, _CMP_GT_OQ);
    j = _mm256_blendv_epi8(j, _mm256_set1_epi32(2), _mm256_castps_si256(gt));
    m = _mm256_blendv_ps(m, e1, gt);
    gt = _mm256_cmp_ps(o1, m, _CMP_GT_OQ);
    j = _mm256_blendv_epi8(j, _mm256_set1_epi32(3), _mm256_castps_si256(gt));
    m = _mm256_blendv_ps(m, o1, gt);
    st8(y, cnt, m);
    if (win) store_bytes8(win, j, cnt);
}

static AVX2 void maxpool2_fwd_avx2(float *y, unsigned char *win, const float *x, int W, int OH, int OW)
{
    for (int oh = 0; oh < OH; oh++) {
        const float *r0 = x + (size_t)2 * oh * W, *r1 = r0 + W;
        float *yr = y + (size_t)oh * OW;
        unsigned char *wr = win ? win + (size_t)oh * OW : NULL;
        int ow = 0;
        for (; ow + 8 <= OW; ow += 8) maxpool8(yr + ow, wr ? wr + ow : NULL, r0 + 2 * ow, r1 + 2 * ow, 8);
        if (ow < OW) maxpool8(yr + ow, wr ? wr + ow : NULL, r0 + 2 * ow, r1 + 2 * ow, OW - ow);
    }
}

/* dy of cnt windows into the row pair r0, r1 */
static inline AVX2 void unpool8(float *r0, float *r1, const float *dy, const unsigned char *win, int cnt)
{
    const __m256 z = _mm256_setzero_ps(), nz = _mm256_set1_ps(-0.0f);
    __m256i j = load_bytes8(win, cnt);
    __m256 g = ld8(dy, cnt), v[4], lo, hi;
    for (int q = 0; q < 4; q++) {
        __m256 sel = _mm256_castsi256_ps(_mm256_cmpeq_epi32(j, _mm256_set1_epi32(q)));
        v[q] = _mm256_add_ps(z, _mm256_blendv_ps(nz, g, sel));
    }
    interleave8(v[0], v[1], &lo, &hi);
    st8(r0, 2 * cnt, lo);
    st8(r0 + 8, 2 * cnt - 8, hi);
    interleave8(v[2], v[3], &lo, &hi);
    st8(r1, 2 * cnt, lo);
    st8(r1 + 8, 2 * cnt - 8, hi);
}

static AVX2 void maxpool2_bwd_fresh_avx2(float *dx, const float *dy, const unsigned char *win, int H, int W,
                                         int OH, int OW)
{
    for (int oh = 0; oh < OH; oh++) {
        float *r0 = dx + (size_t)2 * oh * W, *r1 = r0 + W;
        const float *g = dy + (size_t)oh * OW;
        const unsigned char *wr = win + (size_t)oh * OW;
        int ow = 0;
        for (; ow + 8 <= OW; ow += 8) unpool8(r0 + 2 * ow, r1 + 2 * ow, g + ow, wr + ow, 8);
        if (ow < OW) unpool8(r0 + 2 * ow, r1 + 2 * ow, g + ow, wr + ow, OW - ow);
        for (int w = 2 * OW; w < W; w++) r0[w] = r1[w] = 0.0f;
    }
    for (int h = 2 * OH; h < H; h++) memset(dx + (size_t)h * W, 0, (size_t)W * sizeof(float));
}

/* The sums keep the 32 lanes in eight registers (eight independent
 * chains): register r, lane l takes the elements i = 4r + l mod 32. Full
 * blocks of 32 are summed with plain loads; in the last, partial one the
 * lanes past the end add -0.0, the exact identity of addition (+0.0 would
 * turn a -0.0 lane into +0.0), so a lane holds the reference's value
 * whatever it started from. */

/* lanes [0, k) of 4 doubles, as a blend mask (k may be <= 0 or > 4) */
static inline AVX2 __m256d first4_pd(ptrdiff_t k)
{
    long long c = k < 0 ? 0 : k > 4 ? 4 : (long long)k;
    return _mm256_castsi256_pd(_mm256_cmpgt_epi64(_mm256_set1_epi64x(c), _mm256_setr_epi64x(0, 1, 2, 3)));
}

/* v in lanes [0, k), -0.0 in the others */
static inline AVX2 __m256d keep4(__m256d v, ptrdiff_t k)
{
    return k >= 4 ? v : _mm256_blendv_pd(_mm256_set1_pd(-0.0), v, first4_pd(k));
}

/* the k floats at p (k may be <= 0 or > 4; the rest 0) as 4 doubles */
static inline AVX2 __m256d load4_pd(const float *p, ptrdiff_t k)
{
    if (k >= 4) return _mm256_cvtps_pd(_mm_loadu_ps(p));
    __m128i m = _mm_cmpgt_epi32(_mm_set1_epi32(k < 0 ? 0 : (int)k), _mm_setr_epi32(0, 1, 2, 3));
    return _mm256_cvtps_pd(k > 0 ? _mm_maskload_ps(p, m) : _mm_setzero_ps());
}

#define NREG (LANES / 4) /* double registers of the sums */

static AVX2 void acc_sum_avx2(double *acc, const float *p, size_t n)
{
    __m256d a[NREG];
    for (int r = 0; r < NREG; r++) a[r] = _mm256_loadu_pd(acc + 4 * r);
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int r = 0; r < NREG; r++) a[r] = _mm256_add_pd(a[r], load4_pd(p + i + 4 * r, 4));
    for (int r = 0; i < n && r < NREG; r++) {
        ptrdiff_t k = (ptrdiff_t)(n - i) - 4 * r;
        a[r] = _mm256_add_pd(a[r], keep4(load4_pd(p + i + 4 * r, k), k));
    }
    for (int r = 0; r < NREG; r++) _mm256_storeu_pd(acc + 4 * r, a[r]);
}

/* lanes [0, k) of the 4 elements at p: ((double)p - mu)^2, -0.0 past k */
static inline AVX2 __m256d sqdev4(const float *p, ptrdiff_t k, __m256d mu)
{
    __m256d d = _mm256_sub_pd(load4_pd(p, k), mu);
    return keep4(_mm256_mul_pd(d, d), k);
}

static AVX2 void acc_sqdev_avx2(double *acc, const float *p, size_t n, double mu)
{
    __m256d a[NREG], m = _mm256_set1_pd(mu);
    for (int r = 0; r < NREG; r++) a[r] = _mm256_loadu_pd(acc + 4 * r);
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int r = 0; r < NREG; r++) a[r] = _mm256_add_pd(a[r], sqdev4(p + i + 4 * r, 4, m));
    for (int r = 0; i < n && r < NREG; r++)
        a[r] = _mm256_add_pd(a[r], sqdev4(p + i + 4 * r, (ptrdiff_t)(n - i) - 4 * r, m));
    for (int r = 0; r < NREG; r++) _mm256_storeu_pd(acc + 4 * r, a[r]);
}

/* 8 elements (k of them valid) into registers r, r + 1 of the sums: h in
 * float, then both halves in double */
static inline AVX2 void acc_dy8(__m256d *as, __m256d *at, const float *dy, const float *x, ptrdiff_t k, __m256 mv,
                                __m256 iv)
{
    __m256 g = ld8(dy, k), h = _mm256_mul_ps(_mm256_sub_ps(ld8(x, k), mv), iv);
    __m256d g0 = _mm256_cvtps_pd(_mm256_castps256_ps128(g)), g1 = _mm256_cvtps_pd(_mm256_extractf128_ps(g, 1));
    __m256d h0 = _mm256_cvtps_pd(_mm256_castps256_ps128(h)), h1 = _mm256_cvtps_pd(_mm256_extractf128_ps(h, 1));
    as[0] = _mm256_add_pd(as[0], keep4(g0, k));
    as[1] = _mm256_add_pd(as[1], keep4(g1, k - 4));
    at[0] = _mm256_add_pd(at[0], keep4(_mm256_mul_pd(g0, h0), k));
    at[1] = _mm256_add_pd(at[1], keep4(_mm256_mul_pd(g1, h1), k - 4));
}

static AVX2 void acc_dy_avx2(double *s, double *t, const float *dy, const float *x, size_t n, float mean,
                             float is)
{
    __m256d as[NREG], at[NREG];
    for (int r = 0; r < NREG; r++) {
        as[r] = _mm256_loadu_pd(s + 4 * r);
        at[r] = _mm256_loadu_pd(t + 4 * r);
    }
    const __m256 mv = _mm256_set1_ps(mean), iv = _mm256_set1_ps(is);
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int r = 0; r < NREG; r += 2) acc_dy8(as + r, at + r, dy + i + 4 * r, x + i + 4 * r, 8, mv, iv);
    for (int r = 0; i < n && r < NREG; r += 2)
        acc_dy8(as + r, at + r, dy + i + 4 * r, x + i + 4 * r, (ptrdiff_t)(n - i) - 4 * r, mv, iv);
    for (int r = 0; r < NREG; r++) {
        _mm256_storeu_pd(s + 4 * r, as[r]);
        _mm256_storeu_pd(t + 4 * r, at[r]);
    }
}

static inline AVX2 void bn_apply8(float *y, const float *x, ptrdiff_t k, float mean, float is, float g, float b)
{
    __m256 h = _mm256_mul_ps(_mm256_sub_ps(ld8(x, k), _mm256_set1_ps(mean)), _mm256_set1_ps(is));
    st8(y, k, _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(g), h), _mm256_set1_ps(b)));
}

static AVX2 void bn_apply_avx2(float *y, const float *x, size_t n, float mean, float is, float g, float b)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) bn_apply8(y + i, x + i, 8, mean, is, g, b);
    if (i < n) bn_apply8(y + i, x + i, (ptrdiff_t)(n - i), mean, is, g, b);
}

static inline AVX2 void bn_bwd8(float *dx, const float *dy, const float *x, ptrdiff_t k, float mean, float is,
                                float gi, float mdy, float mdyx, int fresh)
{
    __m256 h = _mm256_mul_ps(_mm256_sub_ps(ld8(x, k), _mm256_set1_ps(mean)), _mm256_set1_ps(is));
    __m256 v = _mm256_sub_ps(_mm256_sub_ps(ld8(dy, k), _mm256_set1_ps(mdy)), _mm256_mul_ps(h, _mm256_set1_ps(mdyx)));
    v = _mm256_mul_ps(_mm256_set1_ps(gi), v);
    st8(dx, k, _mm256_add_ps(fresh ? _mm256_setzero_ps() : ld8(dx, k), v));
}

static AVX2 void bn_bwd_avx2(float *dx, const float *dy, const float *x, size_t n, float mean, float is,
                             float gi, float mdy, float mdyx, int fresh)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) bn_bwd8(dx + i, dy + i, x + i, 8, mean, is, gi, mdy, mdyx, fresh);
    if (i < n) bn_bwd8(dx + i, dy + i, x + i, (ptrdiff_t)(n - i), mean, is, gi, mdy, mdyx, fresh);
}

/* cnt <= 16 elements of a dst row from its even and odd sources (NULL:
 * -0.0, which adds nothing) */
static inline AVX2 void interleave16(float *d, const float *e, const float *o, int cnt, int fresh)
{
    const __m256 z = _mm256_setzero_ps(), nz = _mm256_set1_ps(-0.0f);
    __m256 ev = e ? ld8(e, (cnt + 1) / 2) : nz, ov = o ? ld8(o, cnt / 2) : nz, lo, hi;
    interleave8(ev, ov, &lo, &hi);
    st8(d, cnt, _mm256_add_ps(fresh ? z : ld8(d, cnt), lo));
    st8(d + 8, cnt - 8, _mm256_add_ps(fresh ? z : ld8(d + 8, cnt - 8), hi));
}

static AVX2 void interleave2_avx2(float *dst, ptrdiff_t ds, const float *e, const float *o, ptrdiff_t ss,
                                  int rows, int n, int fresh)
{
    for (int r = 0; r < rows; r++) {
        float *d = dst + r * ds;
        const float *er = e ? e + r * ss : NULL, *orow = o ? o + r * ss : NULL;
        int c = 0;
        for (; c + 16 <= n; c += 16) interleave16(d + c, er ? er + c / 2 : NULL, orow ? orow + c / 2 : NULL, 16, fresh);
        if (c < n) interleave16(d + c, er ? er + c / 2 : NULL, orow ? orow + c / 2 : NULL, n - c, fresh);
    }
}

/* 8 floats from row[base + k] where 0 <= base + k < W, else 0 (the
 * address is formed from an integer, so a base before the row start is
 * never a pointer out of bounds) */
static inline AVX2 __m256 load_row8(const float *row, int base, int W)
{
    const float *p = (const float *)(uintptr_t)((uintptr_t)row + (uintptr_t)((intptr_t)base * (intptr_t)sizeof(float)));
    if (base >= 0 && base <= W - 8) return _mm256_loadu_ps(p);
    if (base >= W || base <= -8) return _mm256_setzero_ps();
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i m = _mm256_and_si256(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(-base - 1)),
                                 _mm256_cmpgt_epi32(_mm256_set1_epi32(W - base), idx));
    return _mm256_maskload_ps(p, m);
}

/* k <= 8 elements j.. of row i of the phases (a, b < nb) at o (plane b at
 * o + b*ps), from source row xr (NULL: outside x) */
static inline AVX2 void phases8(float *o, ptrdiff_t ps, const float *xr, int W, int s, int pl, int nb, int j,
                                int k)
{
    if (s == 1) {
        for (int b = 0; b < nb; b++) st8(o + b * ps + j, k, xr ? load_row8(xr, j + b - pl, W) : _mm256_setzero_ps());
        return;
    }
    /* s == 2: lanes l of source columns 2*j - pl + l; even lanes are
     * phase b = 0, odd lanes b = 1 */
    __m256 ev = _mm256_setzero_ps(), ov = ev;
    if (xr) deinterleave8(load_row8(xr, 2 * j - pl, W), load_row8(xr, 2 * j - pl + 8, W), &ev, &ov);
    st8(o + j, k, ev);
    if (nb > 1) st8(o + ps + j, k, ov);
}

/* s == 1 (any nb) or s == 2 (nb <= 2) */
static AVX2 void build_phases_avx2(float *dst, ptrdiff_t ps, const float *x, int H, int W, int s, int pt, int pl,
                                   int Hq, int Wq, int na, int nb)
{
    for (int i = 0; i < Hq; i++) /* source rows in order: s*i + a */
        for (int a = 0; a < na; a++) {
            int r = s * i + a - pt;
            const float *xr = r >= 0 && r < H ? x + (size_t)r * W : NULL;
            float *o = dst + (ptrdiff_t)(a * nb) * ps + (size_t)i * Wq;
            int j = 0;
            for (; j + 8 <= Wq; j += 8) phases8(o, ps, xr, W, s, pl, nb, j, 8);
            if (j < Wq) phases8(o, ps, xr, W, s, pl, nb, j, Wq - j);
        }
    for (int ph = 0; ph < na * nb; ph++)
        memset(dst + ph * ps + (ptrdiff_t)Hq * Wq, 0, (size_t)(ps - (ptrdiff_t)Hq * Wq) * sizeof(float));
}

#define LEVEL qat_simd_level()
#else
#define LEVEL QAT_SIMD_PORTABLE
#define relu_fwd_avx512 relu_fwd_ref
#define relu_bwd_avx512 relu_bwd_ref
#define maxpool2_fwd_avx512 maxpool2_fwd_ref
#define maxpool2_bwd_fresh_avx512 maxpool2_bwd_fresh_ref
#define acc_sum_avx512 acc_sum_ref
#define acc_sqdev_avx512 acc_sqdev_ref
#define acc_dy_avx512 acc_dy_ref
#define bn_apply_avx512 bn_apply_ref
#define bn_bwd_avx512 bn_bwd_ref
#define interleave2_avx512 interleave2_ref
#define build_phases_avx512 build_phases_ref
#define relu_fwd_avx2 relu_fwd_ref
#define relu_bwd_avx2 relu_bwd_ref
#define maxpool2_fwd_avx2 maxpool2_fwd_ref
#define maxpool2_bwd_fresh_avx2 maxpool2_bwd_fresh_ref
#define acc_sum_avx2 acc_sum_ref
#define acc_sqdev_avx2 acc_sqdev_ref
#define acc_dy_avx2 acc_dy_ref
#define bn_apply_avx2 bn_apply_ref
#define bn_bwd_avx2 bn_bwd_ref
#define interleave2_avx2 interleave2_ref
#define build_phases_avx2 build_phases_ref
#endif

/* ---- dispatch ----
 * The engine of qat_simd_level(); every version gives the same bits. */

void qat_k_relu_fwd(float *y, const float *x, size_t n)
{
    switch (LEVEL) {
    case QAT_SIMD_AVX512: relu_fwd_avx512(y, x, n); break;
    case QAT_SIMD_AVX2: relu_fwd_avx2(y, x, n); break;
    default: relu_fwd_ref(y, x, n);
    }
}

void qat_k_relu_bwd(float *dx, const float *y, const float *dy, size_t n, int fresh)
{
    switch (LEVEL) {
    case QAT_SIMD_AVX512: relu_bwd_avx512(dx, y, dy, n, fresh); break;
    case QAT_SIMD_AVX2: relu_bwd_avx2(dx, y, dy, n, fresh); break;
    default: relu_bwd_ref(dx, y, dy, n, fresh);
    }
}

void qat_k_maxpool2_fwd(float *y, unsigned char *win, const float *x, int H, int W, int OH, int OW)
{
    (void)H;
    switch (LEVEL) {
    case QAT_SIMD_AVX512: maxpool2_fwd_avx512(y, win, x, W, OH, OW); break;
    case QAT_SIMD_AVX2: maxpool2_fwd_avx2(y, win, x, W, OH, OW); break;
    default: maxpool2_fwd_ref(y, win, x, W, OH, OW);
    }
}

void qat_k_maxpool2_bwd_fresh(float *dx, const float *dy, const unsigned char *win, int H, int W,
                              int OH, int OW)
{
    switch (LEVEL) {
    case QAT_SIMD_AVX512: maxpool2_bwd_fresh_avx512(dx, dy, win, H, W, OH, OW); break;
    case QAT_SIMD_AVX2: maxpool2_bwd_fresh_avx2(dx, dy, win, H, W, OH, OW); break;
    default: maxpool2_bwd_fresh_ref(dx, dy, win, H, W, OH, OW);
    }
}

void qat_k_acc_sum(double *acc, const float *p, size_t n)
{
    switch (LEVEL) {
    case QAT_SIMD_AVX512: acc_sum_avx512(acc, p, n); break;
    case QAT_SIMD_AVX2: acc_sum_avx2(acc, p, n); break;
    default: acc_sum_ref(acc, p, n);
    }
}

void qat_k_acc_sqdev(double *acc, const float *p, size_t n, double mu)
{
    switch (LEVEL) {
    case QAT_SIMD_AVX512: acc_sqdev_avx512(acc, p, n, mu); break;
    case QAT_SIMD_AVX2: acc_sqdev_avx2(acc, p, n, mu); break;
    default: acc_sqdev_ref(acc, p, n, mu);
    }
}

void qat_k_acc_dy(double *s, double *t, const float *dy, const float *x, size_t n, float mean,
                  float is)
{
    switch (LEVEL) {
    case QAT_SIMD_AVX512: acc_dy_avx512(s, t, dy, x, n, mean, is); break;
    case QAT_SIMD_AVX2: acc_dy_avx2(s, t, dy, x, n, mean, is); break;
    default: acc_dy_ref(s, t, dy, x, n, mean, is);
    }
}

void qat_k_bn_apply(float *y, const float *x, size_t n, float mean, float is, float g, float b)
{
    switch (LEVEL) {
    case QAT_SIMD_AVX512: bn_apply_avx512(y, x, n, mean, is, g, b); break;
    case QAT_SIMD_AVX2: bn_apply_avx2(y, x, n, mean, is, g, b); break;
    default: bn_apply_ref(y, x, n, mean, is, g, b);
    }
}

void qat_k_bn_bwd(float *dx, const float *dy, const float *x, size_t n, float mean, float is,
                  float gi, float mdy, float mdyx, int fresh)
{
    switch (LEVEL) {
    case QAT_SIMD_AVX512: bn_bwd_avx512(dx, dy, x, n, mean, is, gi, mdy, mdyx, fresh); break;
    case QAT_SIMD_AVX2: bn_bwd_avx2(dx, dy, x, n, mean, is, gi, mdy, mdyx, fresh); break;
    default: bn_bwd_ref(dx, dy, x, n, mean, is, gi, mdy, mdyx, fresh);
    }
}

void qat_k_interleave2(float *dst, ptrdiff_t ds, const float *e, const float *o, ptrdiff_t ss, int rows,
                       int n, int fresh)
{
    switch (LEVEL) {
    case QAT_SIMD_AVX512: interleave2_avx512(dst, ds, e, o, ss, rows, n, fresh); break;
    case QAT_SIMD_AVX2: interleave2_avx2(dst, ds, e, o, ss, rows, n, fresh); break;
    default: interleave2_ref(dst, ds, e, o, ss, rows, n, fresh);
    }
}

void qat_k_build_phases(float *dst, ptrdiff_t ps, const float *x, int H, int W, int s, int pt, int pl,
                        int Hq, int Wq, int na, int nb)
{
    int lv = LEVEL;
    if (lv == QAT_SIMD_AVX512 && s <= 2)
        build_phases_avx512(dst, ps, x, H, W, s, pt, pl, Hq, Wq, na, nb);
    else if (lv == QAT_SIMD_AVX2 && (s == 1 || (s == 2 && nb <= 2)))
        build_phases_avx2(dst, ps, x, H, W, s, pt, pl, Hq, Wq, na, nb);
    else
        build_phases_ref(dst, ps, x, H, W, s, pt, pl, Hq, Wq, na, nb);
}
