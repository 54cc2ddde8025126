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

static inline __m256 load8_half(const uint16_t *halves) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)halves));
}

void clipmath_half_dot(const uint16_t *rows, const float *query, float *out, int64_t n_rows, int64_t dim,
                       int64_t ahead, int64_t threads) {
    const int64_t ahead_halves = ahead / 2;
    (void)threads;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && n_rows >= 32768 * threads)
    for (int64_t r = 0; r < n_rows; r++) {
        const uint16_t *row = rows + r * dim;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int64_t j = 0;
        for (; j + 32 <= dim; j += 32) { /* one 64-byte cache line of halves per step */
            if (ahead_halves) _mm_prefetch((const char *)(row + j + ahead_halves), _MM_HINT_T0);
            a0 = _mm256_fmadd_ps(load8_half(row + j), _mm256_loadu_ps(query + j), a0);
            a1 = _mm256_fmadd_ps(load8_half(row + j + 8), _mm256_loadu_ps(query + j + 8), a1);
            a2 = _mm256_fmadd_ps(load8_half(row + j + 16), _mm256_loadu_ps(query + j + 16), a2);
            a3 = _mm256_fmadd_ps(load8_half(row + j + 24), _mm256_loadu_ps(query + j + 24), a3);
        }
        for (; j + 8 <= dim; j += 8) a0 = _mm256_fmadd_ps(load8_half(row + j), _mm256_loadu_ps(query + j), a0);
        float score = sum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; j < dim; j++) score += _cvtsh_ss(row[j]) * query[j];
        out[r] = score;
    }
}

void clipmath_float_dot(const float *rows, const float *query, float *out, int64_t n_rows, int64_t dim,
                        int64_t ahead, int64_t threads) {
    const int64_t ahead_floats = ahead / 4;
    (void)threads;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && n_rows >= 32768 * threads)
    for (int64_t r = 0; r < n_rows; r++) {
        const float *row = rows + r * dim;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int64_t j = 0;
        for (; j + 32 <= dim; j += 32) { /* two 64-byte cache lines of floats per step */
            if (ahead_floats) {
                _mm_prefetch((const char *)(row + j + ahead_floats), _MM_HINT_T0);
                _mm_prefetch((const char *)(row + j + ahead_floats + 16), _MM_HINT_T0);
            }
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(row + j), _mm256_loadu_ps(query + j), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(row + j + 8), _mm256_loadu_ps(query + j + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(row + j + 16), _mm256_loadu_ps(query + j + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(row + j + 24), _mm256_loadu_ps(query + j + 24), a3);
        }
        for (; j + 8 <= dim; j += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(row + j), _mm256_loadu_ps(query + j), a0);
        float score = sum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; j < dim; j++) score += row[j] * query[j];
        out[r] = score;
    }
}
