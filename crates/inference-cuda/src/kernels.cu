// The CUDA kernels of Agora's inference engine, compiled at run time by NVRTC (no CUDA toolkit is
// needed to build Agora). Compiled with --fmad=false: no multiply and add is fused unless the
// code says so (__fmaf_rn), so every float operation below is the one the CPU engine does.
//
// Layouts: activations row-major [row][col] f32; weights in the GGUF's own blocks (Q4_1: f16 d,
// f16 m, 16 bytes of nibbles, element j in the low nibble of byte j and element j + 16 in its
// high nibble; Q8_0: f16 d, 32 signed bytes); activations quantized per 32-block to 8 bits
// (q, d, s) exactly as the CPU engine does (crates/inference-candle/src/quant/mod.rs).

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// Round to the nearest f16 (ties to even) and back.
__device__ __forceinline__ float round_f16(float x) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h2f(h);
}

// e^x by the steps of crates/inference-candle/src/exp.rs, operation for operation, so the GPU
// and the CPU compute the same bits (the CUDA library's expf differs in the last bit at times).
__device__ __forceinline__ float pow2i(int k) { return __int_as_float((k + 127) << 23); }

__device__ __forceinline__ float exp_agora(float x) {
    if (x != x) return x;
    if (x > 88.72284f) return __int_as_float(0x7f800000);
    if (x < -103.97208f) return 0.0f;
    float n = rintf(__fmul_rn(x, 1.44269504088896341f));
    float r = __fmaf_rn(n, -0.693145751953125f, x);
    r = __fmaf_rn(n, -1.428606765330187045e-06f, r);
    float p = 1.0f / 5040.0f;
    p = __fmaf_rn(p, r, 1.0f / 720.0f);
    p = __fmaf_rn(p, r, 1.0f / 120.0f);
    p = __fmaf_rn(p, r, 1.0f / 24.0f);
    p = __fmaf_rn(p, r, 1.0f / 6.0f);
    p = __fmaf_rn(p, r, 0.5f);
    p = __fmaf_rn(p, r, 1.0f);
    p = __fmaf_rn(p, r, 1.0f);
    int k = (int)n;
    int a = k / 2;
    return __fmul_rn(__fmul_rn(p, pow2i(a)), pow2i(k - a));
}

__device__ __forceinline__ u16 ld16(const u8* p) {
    return (u16)p[0] | (u16)((u16)p[1] << 8);
}

#define FULL 0xffffffffu

// Block i of 32 activations quantized as the CPU engine quantizes activations
// (crates/inference-candle/src/quant/mod.rs), lane l holding value l: q = round(v / d) with
// d = max|v| / 127; d and s = sum(q) * d rounded to f16. Maximum and integer sum are exact in any
// order. Every lane of the warp calls it.
__device__ __forceinline__ void quantize_block(float v, int i, int lane, signed char* q, float* d,
                                               float* s) {
    float amax = fabsf(v);
    for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(FULL, amax, off));
    float dd = __fdiv_rn(amax, 127.0f);
    float id = dd != 0.0f ? __fdiv_rn(1.0f, dd) : 0.0f;
    int qv = (int)roundf(__fmul_rn(v, id));
    q[(size_t)i * 32 + lane] = (signed char)qv;
    int sum = qv;
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(FULL, sum, off);
    if (lane == 0) {
        d[i] = round_f16(dd);
        s[i] = round_f16(__fmul_rn((float)sum, dd));
    }
}

// y[r][o] for n outputs and m rows. One warp per output and R rows (blockIdx.y * R ..): lane l
// takes blocks l, l + 32, ... (reading the row's blocks side by side), computes each block's
// exact integer sum P and its scale for each of its rows, and every lane then runs the blocks in
// order through each row's own chain: A = fma(P, d_w * d_x, A), M = fma(m_w, s_x, M),
// y = A + M. R > 1 reads each weight block once for R rows (prompts and scoring passes); a
// decoding step has too few rows to fill the GPU that way and takes R = 1.
template <int R>
__device__ __forceinline__ void matmul_q4_1_rows(const u8* w, int n, int blocks,
                                                 const signed char* q, const float* d,
                                                 const float* s, int m, float* y) {
    int o = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    int r0 = blockIdx.y * R;
    if (o >= n || r0 >= m) return;
    int rows = min(R, m - r0);
    const u8* wr = w + (size_t)o * blocks * 20;
    float A[R], M[R];
#pragma unroll
    for (int rr = 0; rr < R; rr++) A[rr] = M[rr] = 0.0f;
    for (int b0 = 0; b0 < blocks; b0 += 32) {
        int b = b0 + lane;
        int P[R];
        float t[R], sx[R], mw = 0.0f;
#pragma unroll
        for (int rr = 0; rr < R; rr++) {
            P[rr] = 0;
            t[rr] = sx[rr] = 0.0f;
        }
        if (b < blocks) {
            const u8* wb = wr + b * 20;
            const u32* nib = (const u32*)(wb + 4);
            u32 v[4];
            for (int j = 0; j < 4; j++) v[j] = nib[j];
            float dw = h2f(ld16(wb));
            mw = h2f(ld16(wb + 2));
#pragma unroll
            for (int rr = 0; rr < R; rr++) {
                if (rr < rows) {
                    const int* qr = (const int*)(q + (size_t)(r0 + rr) * blocks * 32);
                    for (int j = 0; j < 4; j++) {
                        P[rr] = __dp4a((int)(v[j] & 0x0F0F0F0Fu), qr[b * 8 + j], P[rr]);
                        P[rr] = __dp4a((int)((v[j] >> 4) & 0x0F0F0F0Fu), qr[b * 8 + 4 + j], P[rr]);
                    }
                    int k = (r0 + rr) * blocks + b;
                    t[rr] = __fmul_rn(dw, d[k]);
                    sx[rr] = s[k];
                }
            }
        }
        int nb = min(32, blocks - b0);
        for (int l = 0; l < nb; l++) {
            float ml = __shfl_sync(FULL, mw, l);
#pragma unroll
            for (int rr = 0; rr < R; rr++) {
                if (rr < rows) {
                    A[rr] = __fmaf_rn((float)__shfl_sync(FULL, P[rr], l),
                                      __shfl_sync(FULL, t[rr], l), A[rr]);
                    M[rr] = __fmaf_rn(ml, __shfl_sync(FULL, sx[rr], l), M[rr]);
                }
            }
        }
    }
    if (lane == 0) {
#pragma unroll
        for (int rr = 0; rr < R; rr++)
            if (rr < rows) y[(size_t)(r0 + rr) * n + o] = __fadd_rn(A[rr], M[rr]);
    }
}

// The same for Q8_0 weights: A = fma(P, d_w * d_x, A), y = A.
template <int R>
__device__ __forceinline__ void matmul_q8_0_rows(const u8* w, int n, int blocks,
                                                 const signed char* q, const float* d, int m,
                                                 float* y) {
    int o = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    int r0 = blockIdx.y * R;
    if (o >= n || r0 >= m) return;
    int rows = min(R, m - r0);
    const u8* wr = w + (size_t)o * blocks * 34;
    float A[R];
#pragma unroll
    for (int rr = 0; rr < R; rr++) A[rr] = 0.0f;
    for (int b0 = 0; b0 < blocks; b0 += 32) {
        int b = b0 + lane;
        int P[R];
        float t[R];
#pragma unroll
        for (int rr = 0; rr < R; rr++) {
            P[rr] = 0;
            t[rr] = 0.0f;
        }
        if (b < blocks) {
            const u8* wb = wr + b * 34;
            const u16* wq = (const u16*)(wb + 2);
            int v[8];
            for (int j = 0; j < 8; j++) v[j] = (int)((u32)wq[2 * j] | ((u32)wq[2 * j + 1] << 16));
            float dw = h2f(ld16(wb));
#pragma unroll
            for (int rr = 0; rr < R; rr++) {
                if (rr < rows) {
                    const int* qr = (const int*)(q + (size_t)(r0 + rr) * blocks * 32);
                    for (int j = 0; j < 8; j++) P[rr] = __dp4a(v[j], qr[b * 8 + j], P[rr]);
                    t[rr] = __fmul_rn(dw, d[(r0 + rr) * blocks + b]);
                }
            }
        }
        int nb = min(32, blocks - b0);
        for (int l = 0; l < nb; l++) {
#pragma unroll
            for (int rr = 0; rr < R; rr++) {
                if (rr < rows)
                    A[rr] = __fmaf_rn((float)__shfl_sync(FULL, P[rr], l),
                                      __shfl_sync(FULL, t[rr], l), A[rr]);
            }
        }
    }
    if (lane == 0) {
#pragma unroll
        for (int rr = 0; rr < R; rr++)
            if (rr < rows) y[(size_t)(r0 + rr) * n + o] = A[rr];
    }
}

// Activation rows a product warp takes at once in a wide pass (the `_wide` kernels).
#define MROWS 8

extern "C" __global__ void matmul_q4_1(const u8* w, int n, int blocks, const signed char* q,
                                       const float* d, const float* s, int m, float* y) {
    matmul_q4_1_rows<1>(w, n, blocks, q, d, s, m, y);
}

extern "C" __global__ void matmul_q4_1_wide(const u8* w, int n, int blocks, const signed char* q,
                                            const float* d, const float* s, int m, float* y) {
    matmul_q4_1_rows<MROWS>(w, n, blocks, q, d, s, m, y);
}

extern "C" __global__ void matmul_q8_0(const u8* w, int n, int blocks, const signed char* q,
                                       const float* d, int m, float* y) {
    matmul_q8_0_rows<1>(w, n, blocks, q, d, m, y);
}

extern "C" __global__ void matmul_q8_0_wide(const u8* w, int n, int blocks, const signed char* q,
                                            const float* d, int m, float* y) {
    matmul_q8_0_rows<MROWS>(w, n, blocks, q, d, m, y);
}

// Embedding rows of a Q8_0 matrix: x[t][c] = q * d.
extern "C" __global__ void embed_q8_0(const u8* w, int blocks, const u32* tokens, int n,
                                      float* x) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int cols = blocks * 32;
    if (i >= n * cols) return;
    int t = i / cols, c = i % cols;
    const u8* wb = w + ((size_t)tokens[t] * blocks + c / 32) * 34;
    x[i] = __fmul_rn((float)(signed char)wb[2 + c % 32], h2f(ld16(wb)));
}

// RMS norm of each row, quantized for the next product, one block per row (n a multiple of 32).
// With `add` (not null), first x += add, the residual sum written back to x. The squares are
// summed in order (the CPU's sequential sum); then x / sqrt(sum / n + eps) * w, each 32-block
// quantized by quantize_block (block r * n / 32 + b of row r). One launch where an add, a norm
// and a quantization were three: the same operations.
extern "C" __global__ void norm_quantize(float* x, const float* add, const float* w, int rows,
                                         int n, float eps, signed char* q, float* d, float* s) {
    // One block per row, a thread per value (of a 32-value block per warp): the squares into
    // shared memory, their sum in index order by one thread (the CPU's order: a chain that
    // must stay sequential), then every warp quantizes its blocks at once. One warp doing it
    // all (the sum through 32 shuffles per 32 values, then the blocks one after another) took
    // over half of a decoding step's time on the GPU.
    extern __shared__ float sq[];  // n squares, then the norm's divisor at sq[n]
    int r = blockIdx.x;
    if (r >= rows) return;
    float* xr = x + (size_t)r * n;
    // A row of at most one value per thread (the model's 576) stays in registers, its weight
    // read before the sum: nothing is read from memory after it.
    bool held = n <= blockDim.x;
    float mine = 0.0f, wmine = 0.0f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        float v = xr[c];
        if (add) {
            v = __fadd_rn(v, add[(size_t)r * n + c]);
            xr[c] = v;
        }
        sq[c] = __fmul_rn(v, v);
        mine = v;
        wmine = w[c];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float sum = 0.0f;
#pragma unroll 8
        for (int c = 0; c < n; c++) sum = __fadd_rn(sum, sq[c]);
        sq[n] = __fsqrt_rn(__fadd_rn(__fdiv_rn(sum, (float)n), eps));
    }
    __syncthreads();
    float m = sq[n];
    int blocks = n / 32;
    int lane = threadIdx.x & 31;
    for (int b = threadIdx.x / 32; b < blocks; b += blockDim.x / 32) {
        int c = b * 32 + lane;
        float v = held ? __fmul_rn(__fdiv_rn(mine, m), wmine) : __fmul_rn(__fdiv_rn(xr[c], m), w[c]);
        quantize_block(v, r * blocks + b, lane, q, d, s);
    }
}

__device__ __forceinline__ void rotate(float a, float b, float c, float s, float* o) {
    o[0] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    o[1] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
}

// One 32-value block quantized as the CPU engine quantizes activations and its 8-bit cache
// (crates/inference-candle/src/quant/mod.rs): lane l holds value l; returns the lane's q and
// sets *d to the scale rounded to f16.
__device__ __forceinline__ int quantize_lane(float v, float* d) {
    float amax = fabsf(v);
    for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(FULL, amax, off));
    float dd = __fdiv_rn(amax, 127.0f);
    float id = dd != 0.0f ? __fdiv_rn(1.0f, dd) : 0.0f;
    *d = round_f16(dd);
    return (int)roundf(__fmul_rn(v, id));
}

// Row r's sequence's cache for `layer`: its keys, then (cap positions later) its values. A pass's
// rows may belong to different sequences (batched decoding), each with its own cache: `caches[r]`
// is the address of row r's cache buffer ([layer][keys | values][position][row floats]) and
// `caps[r]` the positions each of its layers has room for.
__device__ __forceinline__ float* layer_cache(const unsigned long long* caches, const int* caps,
                                              int r, int layer, int row) {
    return (float*)caches[r] + (size_t)layer * 2 * caps[r] * row;
}

// The pass's `rows` qkv rows rotated and stored, in one launch: their queries (columns
// [0, qn)) rotated by each row's position into `qout` ([row][qn]), and their keys (rotated) and
// values into their sequences' caches, row r at its position pos[r], quantized to 8 bits per 32
// values of a head (the CPU engine's cache, crates/inference-candle/src/attention.rs). A cache
// position is a row of `kvn` quantized values (exact small integers, kept as floats) and then
// kvn / 32 scales. One warp per (row, 32-block) of the cache, blocks [0, kvn / 32) keys, the
// rest values; then one warp per 32 query pairs of a row.
extern "C" __global__ void rope_store(const float* qkv, int rows, int width, int qn, int kvn,
                                      int half, const int* pos, const unsigned long long* caches,
                                      const int* caps, int layer, const float* cos,
                                      const float* sin, float* qout) {
    int per_row = 2 * (kvn / 32);
    int w = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (w >= rows * per_row) {
        int pairs = qn / 2, per = (pairs + 31) / 32, k = w - rows * per_row;
        if (k >= rows * per) return;
        int r = k / per, p = (k % per) * 32 + lane;
        if (p >= pairs) return;
        const float* src = qkv + (size_t)r * width + 2 * p;
        size_t t = (size_t)pos[r] * half + p % half;
        rotate(src[0], src[1], cos[t], sin[t], qout + (size_t)r * qn + 2 * p);
        return;
    }
    int r = w / per_row, blk = w % per_row;
    bool is_key = blk < kvn / 32;
    int b = is_key ? blk : blk - kvn / 32;
    int e = b * 32 + lane;
    const float* src = qkv + (size_t)r * width + qn;
    float v;
    if (is_key) {
        int p = e / 2, k = p % half;
        size_t t = (size_t)pos[r] * half + k;
        float o[2];
        rotate(src[2 * p], src[2 * p + 1], cos[t], sin[t], o);
        v = o[e % 2];
    } else {
        v = src[kvn + e];
    }
    float d;
    int q = quantize_lane(v, &d);
    int row = kvn + kvn / 32;
    float* keys = layer_cache(caches, caps, r, layer, row);
    float* dst = (is_key ? keys : keys + (size_t)caps[r] * row) + (size_t)pos[r] * row;
    dst[e] = (float)q;
    if (lane == 0) dst[kvn + b] = d;
}

// Threads per (row, head) of the attention kernel: ATTN_WARPS warps.
#define ATTN_WARPS 4

// Causal attention of the pass's `rows` query rows, row r at position pos[r] against its own
// sequence's 8-bit cache (see layer_cache; every sequence of the pass in one launch); one block
// of ATTN_WARPS warps per (row, head), the CPU engine's operations in its order: the query
// quantized per 32 values in two parts (hi, then the remainder x - hi * d as lo); per position
// and block the exact integer dot products P_hi and P_lo, each s = fma(P, d_q * d_k, s) in that
// order; the score s * scale; the softmax sum in position order, probabilities rounded to f16;
// per dimension, o = fma(p * d_v, v, o) in position order. The block's threads share the
// positions' scores and exponentials and the dimensions' sums (each number computed by one
// thread in that order); the maximum is exact in any order. The output goes out quantized per
// 32-block for the output projection (oq, od, os: row r's blocks r * heads * hd / 32 + ...).
// head_dim is a multiple of 32, at most 256.
extern "C" __global__ void attention(const float* q, int rows, int heads, int kv_heads, int hd,
                                     const int* pos, const unsigned long long* caches,
                                     const int* caps, int layer, float scale, signed char* oq,
                                     float* od, float* os) {
    extern __shared__ float sc[];
    __shared__ int qq[2][256];
    __shared__ float qd[2][8];
    __shared__ float wmax[ATTN_WARPS];
    __shared__ float inv;
    int item = blockIdx.x;
    if (item >= rows * heads) return;
    int i = item / heads, h = item % heads, tid = threadIdx.x, lane = tid & 31, warp = tid / 32;
    int threads = blockDim.x;
    int kvh = h / (heads / kv_heads);
    int last = pos[i], kvn = kv_heads * hd, nb = hd / 32, row = kvn + kvn / 32;
    const float* keys = layer_cache(caches, caps, i, layer, row);
    const float* values = keys + (size_t)caps[i] * row;
    const float* qr = q + (size_t)item * hd;
    // The query in two 8-bit parts: its quantization, then that of what it leaves (warp 0).
    if (warp == 0) {
        for (int b = 0; b < nb; b++) {
            float v = qr[b * 32 + lane], d, dl;
            int hi = quantize_lane(v, &d);
            int lo = quantize_lane(__fsub_rn(v, __fmul_rn((float)hi, d)), &dl);
            qq[0][b * 32 + lane] = hi;
            qq[1][b * 32 + lane] = lo;
            if (lane == 0) {
                qd[0][b] = d;
                qd[1][b] = dl;
            }
        }
    }
    __syncthreads();
    float mx = __int_as_float(0xff800000);  // -infinity
    for (int j = tid; j <= last; j += threads) {
        const float* kr = keys + (size_t)j * row;
        float s = 0.0f;
        for (int b = 0; b < nb; b++) {
            float dk = kr[kvn + kvh * nb + b];
            for (int part = 0; part < 2; part++) {
                int dot = 0;
                for (int t = 0; t < 32; t++)
                    dot += qq[part][b * 32 + t] * (int)kr[kvh * hd + b * 32 + t];
                s = __fmaf_rn((float)dot, __fmul_rn(qd[part][b], dk), s);
            }
        }
        float sj = __fmul_rn(s, scale);
        sc[j] = sj;
        mx = fmaxf(mx, sj);
    }
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, off));
    if (lane == 0) wmax[warp] = mx;
    __syncthreads();
    mx = wmax[0];
    for (int w = 1; w < threads / 32; w++) mx = fmaxf(mx, wmax[w]);
    for (int j = tid; j <= last; j += threads) sc[j] = exp_agora(__fsub_rn(sc[j], mx));
    __syncthreads();
    if (tid == 0) {
        float sum = 0.0f;
        for (int j = 0; j <= last; j++) sum = __fadd_rn(sum, sc[j]);
        inv = __fdiv_rn(1.0f, sum);
    }
    __syncthreads();
    float iv = inv;
    for (int dd = tid; dd < hd; dd += threads) {
        int b = dd / 32;
        float o = 0.0f;
        // Unrolled so that later positions' loads are issued before earlier positions'
        // multiply-adds finish; the chain's operations and their order stay the same.
#pragma unroll 8
        for (int j = 0; j <= last; j++) {
            const float* vr = values + (size_t)j * row;
            float w = __fmul_rn(round_f16(__fmul_rn(sc[j], iv)), vr[kvn + kvh * nb + b]);
            o = __fmaf_rn(w, vr[kvh * hd + dd], o);
        }
        // The output row's block item * nb + b, quantized for the output projection as the CPU
        // quantizes activations: a warp holds one whole block (hd and the threads are multiples
        // of 32).
        quantize_block(o, item * nb + b, lane, oq, od, os);
    }
}

// gated[r][i] = silu(g) * u for gate and up side by side in each row (2 * ffn wide), quantized
// for the down projection: one warp per 32-block of a row's ffn values (ffn a multiple of 32),
// block r * ffn / 32 + b of the quantized activations.
extern "C" __global__ void silu_quantize(const float* gu, int rows, int ffn, signed char* q,
                                         float* d, float* s) {
    int i = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    int per_row = ffn / 32;
    if (i >= rows * per_row) return;
    int r = i / per_row, c = (i % per_row) * 32 + lane;
    float g = gu[(size_t)r * 2 * ffn + c], u = gu[(size_t)r * 2 * ffn + ffn + c];
    float v = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, exp_agora(-g))), u);
    quantize_block(v, i, lane, q, d, s);
}

// x += y, elementwise.
extern "C" __global__ void add(float* x, const float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = __fadd_rn(x[i], y[i]);
}
