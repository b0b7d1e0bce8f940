/* Tiling structures passed by value to the kernels in kernels/ (one .cpp per kernel family). Fixed-width fields only, no
 * padding holes, so that the Rust host code can mirror them with #[repr(C)] and pack them with
 * aclrtKernelArgsAppend exactly as the device expects. The host computes every field; kernels trust
 * nothing else about the shapes. */
#ifndef IDEFICS3_KERNELS_TILING_H
#define IDEFICS3_KERNELS_TILING_H

#include <stdint.h>

/* Element types of inputs and outputs. */
#define KDT_BF16 0u
#define KDT_F16 1u
#define KDT_F32 2u

/* out[M,N] = epilogue(A[M,K] x W[N,K]^T + bias[N]); W as the checkpoint stores it (row n = output n). */
typedef struct MatmulTiling {
  uint32_t m, n, k;
  uint32_t inDtype;  /* KDT_BF16 or KDT_F16, for A, W and bias */
  uint32_t outDtype; /* KDT_BF16, KDT_F16 or KDT_F32 */
  uint32_t hasBias;  /* 1: add bias[N] (input dtype) */
  uint32_t gelu;     /* 1: GELU (tanh approximation) after the bias */
  /* matmul_gemv (M == 1, vector cores only) */
  uint32_t gemvRows;    /* W rows reduced together, 1..8 */
  uint32_t gemvChunk;   /* K elements per step, multiple of 16 */
  uint32_t rowsPerCore; /* output columns per vector core; launch ceil(n / rowsPerCore) blocks */
  /* matmul_cube (mixed: cube tiles, vector epilogue through a GM workspace) */
  uint32_t baseM, baseN; /* L0C tile, multiples of 16 */
  uint32_t baseK;        /* L0A/L0B depth, multiple of 16 */
  uint32_t l1K;          /* K per L1 tile, multiple of baseK */
  uint32_t tilesM, tilesN;
  uint32_t epilogueRows; /* rows per vector epilogue step */
  uint32_t reserved;
} MatmulTiling;

/* Decode attention for one query row per head over a KV cache, keys split across vector cores.
 * q[heads][headDim], k/v cache [kvHeads][kvStride][headDim] (first `keys` rows valid),
 * partial[heads][splits][headDim + 8] f32 workspace (acc, then max at +headDim, sum at +headDim+1),
 * out[heads][headDim]. */
typedef struct DecodeTiling {
  uint32_t heads, kvHeads, headDim, keys;
  uint32_t kvStride; /* rows between consecutive kv heads in the cache */
  uint32_t splits;   /* key ranges per kv head; work items = kvHeads * splits */
  uint32_t keysPerSplit;
  uint32_t keyChunk; /* keys loaded per step */
  uint32_t dtype;    /* KDT_BF16 or KDT_F16 (q, k, v, out) */
  float scale;       /* softmax scale, usually 1/sqrt(headDim) */
  uint32_t reserved0, reserved1;
} DecodeTiling;

#endif /* IDEFICS3_KERNELS_TILING_H */
