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

/* Flash attention (prefill / vision): out = softmax(scale * Q K^T + mask) V per (batch, head), GQA by
 * head // (heads / kvHeads). Element (b, s, h, d) of q is at b*qBatchStride + s*qRowStride +
 * h*qHeadStride + d (elements; k, v and out likewise), so BSND projections and a [kvHeads][rows][D] KV
 * cache are both read in place. Masks: keyValid[b][kvLen] bytes (1 = attend) when hasKeyMask; causal:
 * query s sees keys j <= s + causalOffset (offset = cached keys before the first query). A query row with
 * no visible key gets zeros. The kernel takes blockM query rows x blockN keys per step (both 128). */
typedef struct FlashTiling {
  uint32_t batch, heads, kvHeads, headDim;
  uint32_t qLen, kvLen;
  uint32_t qBatchStride, qRowStride, qHeadStride;
  uint32_t kBatchStride, kRowStride, kHeadStride;
  uint32_t vBatchStride, vRowStride, vHeadStride;
  uint32_t oBatchStride, oRowStride, oHeadStride;
  uint32_t causal, causalOffset, hasKeyMask;
  uint32_t dtype; /* KDT_BF16 or KDT_F16 */
  float scale;
  uint32_t blockM, blockN; /* 128, 128 */
  uint32_t qTiles;         /* ceil(qLen / blockM); work items = batch * heads * qTiles */
} FlashTiling;

/* Sizes the Rust mirrors must match (all fields 4 bytes, no padding). */
#ifdef __cplusplus
static_assert(sizeof(MatmulTiling) == 72, "MatmulTiling layout");
static_assert(sizeof(DecodeTiling) == 48, "DecodeTiling layout");
static_assert(sizeof(FlashTiling) == 104, "FlashTiling layout");
#endif

#endif /* IDEFICS3_KERNELS_TILING_H */
