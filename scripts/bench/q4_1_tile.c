/*
 * The Q4_1 product tile's arithmetic alone, in C, to bound what the Rust kernel
 * (crates/inference-candle/src/quant/q4_1.rs, tile_avx512) can reach on this CPU.
 *
 *   gcc -O3 -march=native -o /tmp/q4_1_tile scripts/bench/q4_1_tile.c && /tmp/q4_1_tile
 *
 * One thread. A panel row of 16 outputs by 18 blocks of 32 inputs (the model's 576-wide
 * products) stays in L1; 168 activation rows (133 KB) stream from L2, eight rows to a tile,
 * as in a 168-row scoring pass. Per activation row and block the tile does what the Rust tile
 * does: eight `vpdpbusd` (low and high nibbles in two chains), the sums' addition, conversion,
 * the scale's product and its fused add, and per block the nibbles' unpacking and the
 * minimums' fused adds. Variants (same sums, same bits): `one_chain` (the nibbles' products
 * in one chain, no addition), `gfni` (the high nibbles by one GF(2) affine instead of a
 * shift and a mask). `peak` is `vpdpbusd` alone, twelve independent chains.
 * Prints `bench <name> <value> <unit>` lines.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define R 8
#define NB 18
#define NR 168

typedef struct { uint8_t qs[4][64]; uint16_t d[16]; uint16_t m[16]; } Panel;
typedef struct { int32_t q[8]; float d; float s; int32_t pad; } Act; /* 44 bytes */

static Panel P[NB] __attribute__((aligned(64)));
static Act A[NR][NB];
static float OUT[NR][16];

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

#define TILE(NAME, HIGH, CHAINS)                                                          \
  __attribute__((noinline)) static void NAME(const Panel *p, Act (*a)[NB], float (*o)[16]) { \
    const __m512i mask = _mm512_set1_epi8(15);                                            \
    const __m512i high = _mm512_set1_epi64(0x1020408000000000LL);                         \
    (void)high;                                                                           \
    __m512 mins[R], acc[R];                                                               \
    for (int r = 0; r < R; r++) { mins[r] = _mm512_setzero_ps(); acc[r] = _mm512_setzero_ps(); } \
    for (int b = 0; b < NB; b++) {                                                        \
      __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256((const void *)p[b].m));             \
      for (int r = 0; r < R; r++) mins[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a[r][b].s), mins[r]); \
    }                                                                                     \
    for (int b = 0; b < NB; b++) {                                                        \
      __m512i l[4], h[4];                                                                 \
      for (int j = 0; j < 4; j++) {                                                       \
        __m512i q = _mm512_load_si512(p[b].qs[j]);                                        \
        l[j] = _mm512_and_si512(q, mask);                                                 \
        h[j] = HIGH;                                                                      \
      }                                                                                   \
      __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const void *)p[b].d));             \
      for (int r = 0; r < R; r++) {                                                       \
        const int32_t *x = a[r][b].q;                                                     \
        __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();                 \
        CHAINS                                                                            \
        acc[r] = _mm512_fmadd_ps(sum, _mm512_mul_ps(dw, _mm512_set1_ps(a[r][b].d)), acc[r]); \
      }                                                                                   \
    }                                                                                     \
    for (int r = 0; r < R; r++) _mm512_storeu_ps(o[r], _mm512_add_ps(acc[r], mins[r]));   \
  }

#define SHIFT_MASK _mm512_and_si512(_mm512_srli_epi16(q, 4), mask)
#define AFFINE _mm512_gf2p8affine_epi64_epi8(q, high, 0)
#define TWO_CHAINS                                                                        \
  for (int j = 0; j < 4; j++) {                                                           \
    lo = _mm512_dpbusd_epi32(lo, l[j], _mm512_set1_epi32(x[j]));                          \
    hi = _mm512_dpbusd_epi32(hi, h[j], _mm512_set1_epi32(x[4 + j]));                      \
  }                                                                                       \
  __m512 sum = _mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi));
#define ONE_CHAIN                                                                         \
  (void)hi;                                                                               \
  for (int j = 0; j < 4; j++) {                                                           \
    lo = _mm512_dpbusd_epi32(lo, l[j], _mm512_set1_epi32(x[j]));                          \
    lo = _mm512_dpbusd_epi32(lo, h[j], _mm512_set1_epi32(x[4 + j]));                      \
  }                                                                                       \
  __m512 sum = _mm512_cvtepi32_ps(lo);

TILE(tile_two, SHIFT_MASK, TWO_CHAINS)
TILE(tile_one, SHIFT_MASK, ONE_CHAIN)
TILE(tile_gfni, AFFINE, TWO_CHAINS)

typedef void (*Tile)(const Panel *, Act (*)[NB], float (*)[16]);

static double run(Tile t) {
  const long iters = 100000;
  double best = 1e9;
  for (int round = 0; round < 5; round++) {
    double t0 = now();
    for (long k = 0; k < iters; k++) {
      for (int r0 = 0; r0 + R <= NR; r0 += R) t(P, &A[r0], &OUT[r0]);
      __asm__ volatile("" ::"r"(OUT) : "memory");
    }
    double dt = (now() - t0) / ((double)iters * NR * NB);
    if (dt < best) best = dt;
  }
  return best; /* seconds per row-block (512 multiply-adds) */
}

int main(void) {
  /* Plausible values: no subnormal scales (they would take microcode assists). */
  for (int b = 0; b < NB; b++) {
    for (int j = 0; j < 4; j++)
      for (int i = 0; i < 64; i++) P[b].qs[j][i] = (uint8_t)(i * 37 + j * 11 + b);
    for (int i = 0; i < 16; i++) { P[b].d[i] = 0x2c00 + i; P[b].m[i] = 0xa800 + i; }
  }
  for (int r = 0; r < NR; r++)
    for (int b = 0; b < NB; b++) {
      for (int i = 0; i < 8; i++) A[r][b].q[i] = 0x01ff7f80 + r * 3 + b + i;
      A[r][b].d = 0.01f;
      A[r][b].s = 0.5f;
    }
  float check[3];
  const char *names[3] = {"two_chains", "one_chain", "gfni"};
  Tile tiles[3] = {tile_two, tile_one, tile_gfni};
  for (int v = 0; v < 3; v++) {
    double s = run(tiles[v]);
    float c = 0;
    for (int r = 0; r < NR; r++)
      for (int i = 0; i < 16; i++) c += OUT[r][i];
    check[v] = c;
    printf("bench q4_1_tile/%s_ns_per_row_block %.3f ns\n", names[v], s * 1e9);
    printf("bench q4_1_tile/%s %.1f GMAC/s\n", names[v], 512 / s / 1e9);
  }
  if (memcmp(&check[0], &check[1], sizeof(float)) || memcmp(&check[0], &check[2], sizeof(float))) {
    printf("variants disagree: %g %g %g\n", check[0], check[1], check[2]);
    return 1;
  }
  /* vpdpbusd alone: twelve independent chains. */
  __m512i acc[12];
  __m512i x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(5);
  for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_epi32(i);
  const long n = 100000000;
  double t0 = now();
  for (long k = 0; k < n; k++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], x, y);
    __asm__ volatile("" : "+v"(x));
  }
  double dt = now() - t0;
  __m512i s = acc[0];
  for (int i = 1; i < 12; i++) s = _mm512_add_epi32(s, acc[i]);
  printf("bench q4_1_tile/vpdpbusd_peak %.1f GMAC/s (%d)\n", n * 12.0 * 64 / dt / 1e9,
         _mm512_reduce_add_epi32(s) & 1);
  return 0;
}
