/*
 * idefics3.h: C interface of the idefics3 inference engine (Idefics3 / SmolVLM v1 vision-language models).
 *
 * A loaded model is shared read-only: several threads may call idefics3_generate on one model at once,
 * each call with its own KV cache. Every function that can fail returns 0 on success or one of the
 * IDEFICS3_ERR_* codes, with a message for this thread in idefics3_last_error().
 *
 * Struct fields that are zero or NULL take their defaults, so code written against this version keeps
 * compiling and meaning the same when fields are added: initialise requests with `= {0}`.
 */
#ifndef IDEFICS3_H
#define IDEFICS3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes. */
#define IDEFICS3_OK 0
#define IDEFICS3_ERR_NULL_ARGUMENT 1    /* a required pointer argument was NULL */
#define IDEFICS3_ERR_INVALID_UTF8 2     /* a string argument is not valid UTF-8 */
#define IDEFICS3_ERR_INVALID_ARGUMENT 3 /* a value is out of range (sampling settings, image fields, options) */
#define IDEFICS3_ERR_IO 4               /* a file could not be read */
#define IDEFICS3_ERR_MODEL 5            /* the checkpoint is invalid (configuration, weights, tokenizer files) */
#define IDEFICS3_ERR_INPUT 6            /* the request cannot be processed (image, image count, prompt, chat, context) */
#define IDEFICS3_ERR_INTERNAL 7         /* an internal error; the call was abandoned safely */
#define IDEFICS3_ERR_DEVICE 8           /* the device backend failed or is unavailable (runtime missing, device call) */

/* Activation precision for Idefics3LoadOptions.dtype. */
#define IDEFICS3_DTYPE_DEFAULT 0 /* bf16 */
#define IDEFICS3_DTYPE_F32 1     /* f32: the exact reference */
#define IDEFICS3_DTYPE_BF16 2    /* bf16, as transformers in bfloat16 */
#define IDEFICS3_DTYPE_F16 3     /* IEEE half, as transformers in float16 */

/* Backend for Idefics3LoadOptions.backend. */
#define IDEFICS3_BACKEND_CPU 0    /* the CPU (default) */
#define IDEFICS3_BACKEND_ASCEND 1 /* an Ascend NPU through the CANN runtime, loaded at run time */

typedef struct Idefics3Model Idefics3Model;

typedef struct Idefics3LoadOptions {
  uint32_t dtype;   /* IDEFICS3_DTYPE_* */
  uint32_t threads; /* worker threads of the CPU backend; 0: one per core */
  uint32_t backend; /* IDEFICS3_BACKEND_*; 0: the CPU */
  uint32_t device;  /* device number for the Ascend backend; 0: the first */
} Idefics3LoadOptions;

/* One image. Set exactly one of path, data, rgb (the others NULL), else IDEFICS3_ERR_INVALID_ARGUMENT.
 * len is the size in bytes of the buffer data or rgb points to; for rgb it must be exactly
 * width*height*3 (checked, overflow included, before the buffer is read). Images over 178,956,970
 * pixels are refused. */
typedef struct Idefics3Image {
  const char *path;                      /* a file (PNG, JPEG, WebP, GIF, BMP), or */
  const uint8_t *data; size_t len;       /* encoded bytes in memory (len: their size), or */
  const uint8_t *rgb; uint32_t width, height; /* raw RGB8 pixels, row-major; len = width*height*3 */
} Idefics3Image;

typedef struct Idefics3Request {
  const char *prompt;        /* one user turn through the chat template: images first, then this text; or */
  const char *chat_json;     /* a whole conversation in transformers' message format */
  const Idefics3Image *images; size_t n_images;
  uint32_t max_new_tokens;   /* 0: the model's default */
  float temperature;         /* 0: greedy */
  uint32_t top_k;            /* when sampling; 0: 50 */
  float top_p;               /* when sampling; 0: 1 (no limit) */
  float repetition_penalty;  /* 0: 1 (none) */
  uint64_t seed;
} Idefics3Request;

/* Called with each new piece of UTF-8 text; return false to stop generating. */
typedef bool (*Idefics3TokenCallback)(const char *piece, void *user_data);

/* Loads a checkpoint directory; options may be NULL (defaults). Free the model with idefics3_model_free. */
int idefics3_model_load(const char *model_dir, const Idefics3LoadOptions *options, Idefics3Model **out_model);

/* Frees a model; NULL is a no-op. No call may still be using it. */
void idefics3_model_free(Idefics3Model *model);

/* Generates an answer; on_token may be NULL. On success *out_text holds the whole answer (also when the
 * callback stopped early): free it with idefics3_string_free. */
int idefics3_generate(Idefics3Model *model, const Idefics3Request *request, Idefics3TokenCallback on_token,
                      void *user_data, char **out_text);

/* Frees a string returned by idefics3_generate; NULL is a no-op. */
void idefics3_string_free(char *text);

/* This thread's last failure as UTF-8 ("" after a success); valid until the next call on this thread. */
const char *idefics3_last_error(void);

/* The library version, e.g. "0.1.0". */
const char *idefics3_version(void);

#ifdef __cplusplus
}
#endif

#endif /* IDEFICS3_H */
