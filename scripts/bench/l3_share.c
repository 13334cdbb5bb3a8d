/*
 * How much of L3 one core of this VM can keep, and whether the output matrix's stream can be
 * kept from evicting the layers' weights. Session 18; see BENCHMARKS.md, "Session 18".
 *
 *   gcc -O2 -mavx512f -mclflushopt -o /tmp/l3_share scripts/bench/l3_share.c && /tmp/l3_share
 *
 * Part 1: one core reads a buffer of N MB over and over (the best of 20 passes), for N from 8
 * to 200: the rate falls from L3's to memory's where the buffer stops fitting in the share of
 * L3 that the machine's other tenants leave.
 * Part 2: a 66 MB buffer (the model's Q4_1 layer weights) and a 30 MB one (its Q8_0 output
 * matrix) read in turn, as a decoding pass reads them; the second read plainly, with
 * `prefetchnta` ahead of it, or with each line flushed (`clflushopt`) once read. If the second
 * buffer could be kept out of L3, the first would be read at L3's rate.
 * Prints `bench <name> <value> <unit>` lines. The figures move with the neighbours' use of L3:
 * compare runs taken in the same minute.
 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static __m512i sink;

/* Read `n` bytes (a multiple of 256); mode 1: prefetchnta 2 KB ahead; mode 2: flush once read. */
static void read_all(char *b, size_t n, int mode) {
  __m512i acc = sink;
  for (size_t i = 0; i < n; i += 256) {
    if (mode == 1)
      for (int k = 0; k < 4; k++) _mm_prefetch(b + i + 2048 + 64 * k, _MM_HINT_NTA);
    for (int k = 0; k < 4; k++) acc = _mm512_add_epi32(acc, _mm512_load_si512(b + i + 64 * k));
    if (mode == 2)
      for (int k = 0; k < 4; k++) _mm_clflushopt(b + i + 64 * k);
  }
  sink = acc;
}

static char *buffer(size_t n) {
  /* 2 KB of slack for the prefetches past the end. */
  char *b = aligned_alloc(64, n + 4096);
  if (!b) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  memset(b, 1, n + 4096);
  return b;
}

int main(void) {
  const int sizes[] = {8, 32, 64, 72, 80, 88, 96, 104, 112, 130, 200};
  for (unsigned s = 0; s < sizeof sizes / sizeof *sizes; s++) {
    size_t n = (size_t)sizes[s] << 20;
    char *b = buffer(n);
    double best = 1e9;
    for (int r = 0; r < 20; r++) {
      double t = now();
      read_all(b, n, 0);
      t = now() - t;
      if (t < best) best = t;
    }
    printf("bench l3_share/read_%dmb %.1f GB/s\n", sizes[s], n / best / 1e9);
    free(b);
  }
  const char *names[] = {"plain", "nta", "flushed"};
  size_t na = (size_t)66 << 20, nb = (size_t)30 << 20;
  char *a = buffer(na), *b = buffer(nb);
  for (int mode = 0; mode < 3; mode++) {
    double ta = 1e9, tb = 1e9;
    for (int r = 0; r < 20; r++) {
      double t0 = now();
      read_all(a, na, 0);
      double t1 = now();
      read_all(b, nb, mode);
      double t2 = now();
      if (t1 - t0 < ta) ta = t1 - t0;
      if (t2 - t1 < tb) tb = t2 - t1;
    }
    printf("bench l3_share/layers_66mb_beside_output_%s %.1f GB/s\n", names[mode], na / ta / 1e9);
    printf("bench l3_share/output_30mb_%s %.1f GB/s\n", names[mode], nb / tb / 1e9);
  }
  int v[16];
  _mm512_storeu_si512(v, sink);
  return v[0] == 12345;
}
