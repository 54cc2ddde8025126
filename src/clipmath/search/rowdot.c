/* Gallery rows . one float32 query -> float32 scores, one streaming pass (x86-64 with AVX2, FMA and F16C).
 *
 * Built once per machine by clipmath.search.rowdot with the system C compiler and loaded with ctypes. Rows are
 * split over `threads` OpenMP threads (torch's own OpenMP runtime, loaded before this library). Each row is read
 * eight values at a time (float16 rows converted to float32 first) and multiplied-added into four independent
 * accumulators; products and sums are float32. The loop also asks for the cache line `ahead` bytes further on: a
 * single core reading a large gallery otherwise waits on memory for ~12% of the time (docs/scaling.md).
 */
#include <immintrin.h>
#include <stdint.h>

static inline float sum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* eight values of a row from column j on, as float32 (`half`: the row holds float16) */
static inline __m256 load8(const void *row, int64_t j, int half) {
    if (half) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + j)));
    return _mm256_loadu_ps((const float *)row + j);
}

static inline float value(const void *row, int64_t j, int half) {
    return half ? _cvtsh_ss(((const uint16_t *)row)[j]) : ((const float *)row)[j];
}

/* the loop of both kernels; inlined into each with `half` a constant, so the branches on it compile away */
static inline void row_dot(const void *rows, int half, const float *query, float *out, int64_t n_rows, int64_t dim,
                           int64_t ahead, int64_t threads) {
    const int64_t item = half ? 2 : 4, step_bytes = 32 * item;
    (void)threads;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && n_rows >= 32768 * threads)
    for (int64_t r = 0; r < n_rows; r++) {
        const char *row = (const char *)rows + r * dim * item;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int64_t j = 0;
        for (; j + 32 <= dim; j += 32) { /* one (float16) or two (float32) 64-byte cache lines per step */
            for (int64_t line = 0; ahead && line < step_bytes; line += 64)
                _mm_prefetch(row + j * item + ahead + line, _MM_HINT_T0);
            a0 = _mm256_fmadd_ps(load8(row, j, half), _mm256_loadu_ps(query + j), a0);
            a1 = _mm256_fmadd_ps(load8(row, j + 8, half), _mm256_loadu_ps(query + j + 8), a1);
            a2 = _mm256_fmadd_ps(load8(row, j + 16, half), _mm256_loadu_ps(query + j + 16), a2);
            a3 = _mm256_fmadd_ps(load8(row, j + 24, half), _mm256_loadu_ps(query + j + 24), a3);
        }
        for (; j + 8 <= dim; j += 8) a0 = _mm256_fmadd_ps(load8(row, j, half), _mm256_loadu_ps(query + j), a0);
        float score = sum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; j < dim; j++) score += value(row, j, half) * query[j];
        out[r] = score;
    }
}

void clipmath_half_dot(const uint16_t *rows, const float *query, float *out, int64_t n_rows, int64_t dim,
                       int64_t ahead, int64_t threads) {
    row_dot(rows, 1, query, out, n_rows, dim, ahead, threads);
}

void clipmath_float_dot(const float *rows, const float *query, float *out, int64_t n_rows, int64_t dim,
                        int64_t ahead, int64_t threads) {
    row_dot(rows, 0, query, out, n_rows, dim, ahead, threads);
}
