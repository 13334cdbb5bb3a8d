/*
 * Intel AMX for a scoring pass's Q4_1 products, in C: what the tiles give once each block's
 * 32-bit sums are scaled exactly as the AVX-512 tile scales them (same bits: the program
 * checks every output against a scalar reference), and where the time goes.
 *
 *   gcc -O3 -march=native -mamx-tile -mamx-int8 -o /tmp/amx_tile scripts/bench/amx_tile.c
 *   /tmp/amx_tile
 *
 * One thread. 176 activation rows by 1,536 outputs by 576 inputs (18 blocks of 32), weights
 * already unpacked to one byte per value in the tiles' layout (a panel of 16 outputs and one
 * block: 8 rows of 64 bytes), activations repacked to 16 rows x 32 bytes per tile. Per block
 * of 16 rows x 16 outputs: `tdpbsud` (signed activations, unsigned weights) into a zeroed
 * tile, the tile stored, and per row the sums converted, multiplied by `d_w * d_a` and added
 * into the row's chain (`fma`), the minimums' chain (`m_w * s_a`) apart, as the Rust tile does.
 *
 * Variants:
 * - `naive`: per block its tile steps, then all the float steps;
 * - `pipelined`: four sum tiles in turn, each block's float steps two blocks after its tile
 *   steps, the rows' 16 chains in registers;
 * - `tiles_only`, `float_only`: each half of `pipelined` alone;
 * - `pipelined_other_buffer`: `pipelined` with its float steps reading a buffer the tiles
 *   did not write (wrong results; it times the store-to-load path).
 * Session 21 (this machine, two runs): naive 298-300, pipelined 339-340 billion
 * multiply-adds/s per core (the same bits as the reference), tiles alone 855-856, float steps
 * alone (without the minimums) 974-975, the other buffer 333-343: the two halves do not
 * overlap, and not because of the store-to-load path. The AVX-512 tile (`q4_1_tile.c`):
 * 213-231. See BENCHMARKS.md, "Session 21".
 * Prints `bench <name> <value> <unit>` lines.
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NB 18   /* blocks of 32 inputs: K = 576 */
#define NR 176  /* activation rows, whole groups of 16 */
#define NO 1536 /* outputs */
#define NP (NO / 16)
#define NG (NR / 16)

typedef struct { int8_t q[32]; float d; float s; int32_t off; } Act; /* 44 bytes */
static Act A[NR][NB];
static int8_t AP[NG][NB][16][32] __attribute__((aligned(64)));  /* A as tiles */
static uint8_t W[NP][NB][8][64] __attribute__((aligned(64)));  /* B as tiles */
static float DW[NP][NB][16], MW[NP][NB][16];
static float OUT[NR][NO], REF[NR][NO];
static int32_t CB[4][16][16] __attribute__((aligned(64)));
static int32_t OTHER[4][16][16] __attribute__((aligned(64)));

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} __attribute__((packed)) TileConfig;

/* Tiles 0-3: sums (16 x 64 bytes); 4: activations (16 x 32); 5: weights (8 x 64). */
static void configure(void) {
  TileConfig c;
  memset(&c, 0, sizeof c);
  c.palette = 1;
  for (int t = 0; t < 4; t++) { c.rows[t] = 16; c.colsb[t] = 64; }
  c.rows[4] = 16; c.colsb[4] = 32;
  c.rows[5] = 8; c.colsb[5] = 64;
  _tile_loadconfig(&c);
}

static void reference(void) {
  for (int r = 0; r < NR; r++)
    for (int p = 0; p < NP; p++)
      for (int o = 0; o < 16; o++) {
        float acc = 0, mins = 0;
        for (int b = 0; b < NB; b++) {
          int32_t s = 0;
          for (int k = 0; k < 32; k++) s += (int32_t)A[r][b].q[k] * (int32_t)W[p][b][k / 4][o * 4 + k % 4];
          acc = __builtin_fmaf((float)s, DW[p][b][o] * A[r][b].d, acc);
          mins = __builtin_fmaf(MW[p][b][o], A[r][b].s, mins);
        }
        REF[r][p * 16 + o] = acc + mins;
      }
}

#define TILE_STEP(C, g, p, b)                         \
  do {                                                \
    _tile_zero(C);                                    \
    _tile_loadd(4, AP[g][b], 32);                     \
    _tile_loadd(5, W[p][b], 64);                      \
    _tile_dpbsud(C, 4, 5);                            \
    _tile_stored(C, CB[C], 64);                       \
  } while (0)

__attribute__((target("avx512f"))) static inline void float_step(int g, int p, int b, __m512 *acc, int32_t (*sums)[16]) {
  __m512 dw = _mm512_load_ps(DW[p][b]);
  for (int r = 0; r < 16; r++) {
    __m512 s = _mm512_cvtepi32_ps(_mm512_load_si512(sums[r]));
    acc[r] = _mm512_fmadd_ps(s, _mm512_mul_ps(dw, _mm512_set1_ps(A[g * 16 + r][b].d)), acc[r]);
  }
}

__attribute__((target("avx512f"))) static void minimums(int g, int p, float (*mins)[16]) {
  for (int r0 = 0; r0 < 16; r0 += 4) {
    __m512 m[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int b = 0; b < NB; b++) {
      __m512 mw = _mm512_load_ps(MW[p][b]);
      for (int i = 0; i < 4; i++) m[i] = _mm512_fmadd_ps(mw, _mm512_set1_ps(A[g * 16 + r0 + i][b].s), m[i]);
    }
    for (int i = 0; i < 4; i++) _mm512_store_ps(mins[r0 + i], m[i]);
  }
}

__attribute__((target("avx512f"))) static void finish(int g, int p, __m512 *acc, float (*mins)[16]) {
  for (int r = 0; r < 16; r++) _mm512_storeu_ps(&OUT[g * 16 + r][p * 16], _mm512_add_ps(acc[r], _mm512_load_ps(mins[r])));
}

static int32_t NAIVE[NB][16][16] __attribute__((aligned(64)));

__attribute__((target("amx-tile,amx-int8,avx512f"))) static void naive(void) {
  for (int g = 0; g < NG; g++)
    for (int p = 0; p < NP; p++) {
      for (int b = 0; b < NB; b++) {
        _tile_zero(0);
        _tile_loadd(4, AP[g][b], 32);
        _tile_loadd(5, W[p][b], 64);
        _tile_dpbsud(0, 4, 5);
        _tile_stored(0, NAIVE[b], 64);
      }
      float mins[16][16] __attribute__((aligned(64)));
      minimums(g, p, mins);
      __m512 acc[16];
      for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps();
      for (int b = 0; b < NB; b++) float_step(g, p, b, acc, NAIVE[b]);
      finish(g, p, acc, mins);
    }
}

/* Four sum tiles in turn; block b's float steps after block b + 2's tile steps. NB = 18. */
#define PIPELINED(NAME, SUMS)                                                             \
  __attribute__((target("amx-tile,amx-int8,avx512f"))) static void NAME(void) {           \
    for (int g = 0; g < NG; g++)                                                          \
      for (int p = 0; p < NP; p++) {                                                      \
        float mins[16][16] __attribute__((aligned(64)));                                  \
        minimums(g, p, mins);                                                             \
        __m512 acc[16];                                                                   \
        for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps();                        \
        TILE_STEP(0, g, p, 0);                                                            \
        TILE_STEP(1, g, p, 1);                                                            \
        for (int b = 2; b < 18; b += 4) {                                                 \
          TILE_STEP(2, g, p, b);     float_step(g, p, b - 2, acc, SUMS[0]);               \
          TILE_STEP(3, g, p, b + 1); float_step(g, p, b - 1, acc, SUMS[1]);               \
          TILE_STEP(0, g, p, b + 2); float_step(g, p, b, acc, SUMS[2]);                   \
          TILE_STEP(1, g, p, b + 3); float_step(g, p, b + 1, acc, SUMS[3]);               \
        }                                                                                 \
        float_step(g, p, 16, acc, SUMS[0]);                                               \
        float_step(g, p, 17, acc, SUMS[1]);                                               \
        finish(g, p, acc, mins);                                                          \
      }                                                                                   \
  }
PIPELINED(pipelined, CB)
PIPELINED(pipelined_other_buffer, OTHER)

__attribute__((target("amx-tile,amx-int8,avx512f"))) static void tiles_only(void) {
  for (int g = 0; g < NG; g++)
    for (int p = 0; p < NP; p++)
      for (int b = 0; b < 16; b += 4) {
        TILE_STEP(0, g, p, b); TILE_STEP(1, g, p, b + 1); TILE_STEP(2, g, p, b + 2); TILE_STEP(3, g, p, b + 3);
      }
}

__attribute__((target("avx512f"))) static void float_only(void) {
  for (int g = 0; g < NG; g++)
    for (int p = 0; p < NP; p++) {
      __m512 acc[16];
      for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps();
      for (int b = 0; b < NB; b++) float_step(g, p, b, acc, CB[b & 3]);
      for (int r = 0; r < 16; r++) _mm512_storeu_ps(&OUT[g * 16 + r][p * 16], acc[r]);
    }
}

static int mismatches(void) {
  int bad = 0;
  for (int r = 0; r < NR; r++)
    for (int o = 0; o < NO; o++) bad += memcmp(&OUT[r][o], &REF[r][o], 4) != 0;
  return bad;
}

static void run(void (*f)(void), const char *name, double macs, int check) {
  memset(OUT, 0, sizeof OUT);
  double best = 1e9;
  for (int t = 0; t < 20; t++) {
    double s = now();
    f();
    double e = now() - s;
    if (e < best) best = e;
  }
  if (check && mismatches()) {
    printf("%s: outputs differ from the reference\n", name);
    exit(1);
  }
  printf("bench amx_tile/%s %.1f GMAC/s\n", name, macs / best / 1e9);
}

int main(void) {
  /* ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA: the kernel grants the tiles' state. */
  if (syscall(SYS_arch_prctl, 0x1023, 18)) {
    perror("arch_prctl(ARCH_REQ_XCOMP_PERM)");
    return 1;
  }
  srand(1);
  for (int r = 0; r < NR; r++)
    for (int b = 0; b < NB; b++) {
      for (int k = 0; k < 32; k++) A[r][b].q[k] = rand() % 255 - 127;
      A[r][b].d = (rand() % 1000) / 1e4f;
      A[r][b].s = (rand() % 1000) / 1e3f;
    }
  for (int p = 0; p < NP; p++)
    for (int b = 0; b < NB; b++) {
      for (int i = 0; i < 8; i++)
        for (int j = 0; j < 64; j++) W[p][b][i][j] = rand() % 16;
      for (int o = 0; o < 16; o++) {
        DW[p][b][o] = (rand() % 1000) / 1e4f;
        MW[p][b][o] = (rand() % 1000) / 1e4f;
      }
    }
  for (int g = 0; g < NG; g++)
    for (int b = 0; b < NB; b++)
      for (int r = 0; r < 16; r++) memcpy(AP[g][b][r], A[g * 16 + r][b].q, 32);
  configure();
  reference();
  double macs = (double)NR * NO * NB * 32;
  run(naive, "naive", macs, 1);
  run(pipelined, "pipelined", macs, 1);
  run(tiles_only, "tiles_only", macs * 16 / 18, 0);
  run(float_only, "float_only", macs, 0);
  run(pipelined_other_buffer, "pipelined_other_buffer", macs, 0);
  _tile_release();
  return 0;
}
