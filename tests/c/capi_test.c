/* Exercises the C interface from the header alone: loading, generation from files, memory and raw
 * pixels, streaming and cancelling, two threads on one model, and every error path.
 * Usage: capi_test MODEL_DIR IMAGE_FILE CHAT_JSON_FILE
 * Prints one line per request, "<name>\t<text>", for the harness to compare with the Rust API. */
#include "idefics3.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                           \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      fprintf(stderr, "check failed at line %d: ", __LINE__);                      \
      fprintf(stderr, __VA_ARGS__);                                                \
      fprintf(stderr, " (last error: %s)\n", idefics3_last_error());               \
      exit(1);                                                                     \
    }                                                                              \
  } while (0)

/* The last error must mention `needle`. */
#define EXPECT_MESSAGE(needle)                                                     \
  CHECK(strstr(idefics3_last_error(), (needle)) != NULL, "message lacks \"%s\"", (needle))

#define EXPECT_CODE(call, code)                                                    \
  do {                                                                             \
    int rc_ = (call);                                                              \
    CHECK(rc_ == (code), "%s returned %d, expected %d", #call, rc_, (code));      \
    CHECK(strlen(idefics3_last_error()) > 0, "no message after %s", #call);       \
  } while (0)

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  CHECK(f != NULL, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc((size_t)n + 1);
  CHECK(fread(buf, 1, (size_t)n, f) == (size_t)n, "cannot read %s", path);
  fclose(f);
  buf[n] = 0;
  *len = (size_t)n;
  return buf;
}

typedef struct {
  char text[1 << 16];
  size_t len;
  int calls;
  int stop_after; /* 0: never stop */
} Stream;

static bool on_piece(const char *piece, void *user_data) {
  Stream *s = user_data;
  size_t n = strlen(piece);
  CHECK(s->len + n < sizeof s->text, "stream overflow");
  memcpy(s->text + s->len, piece, n);
  s->len += n;
  s->text[s->len] = 0;
  s->calls++;
  return s->stop_after == 0 || s->calls < s->stop_after;
}

static char *generate(Idefics3Model *m, const Idefics3Request *r, Idefics3TokenCallback cb, void *ud) {
  char *text = NULL;
  int rc = idefics3_generate(m, r, cb, ud, &text);
  CHECK(rc == IDEFICS3_OK, "generate returned %d", rc);
  CHECK(text != NULL, "no text");
  CHECK(strcmp(idefics3_last_error(), "") == 0, "last error not cleared after a success");
  return text;
}

typedef struct {
  Idefics3Model *model;
  const Idefics3Request *request;
  char *text;
} Job;

static void *worker(void *arg) {
  Job *j = arg;
  j->text = generate(j->model, j->request, NULL, NULL);
  return NULL;
}

int main(int argc, char **argv) {
  CHECK(argc == 4, "usage: capi_test MODEL_DIR IMAGE_FILE CHAT_JSON_FILE");
  const char *dir = argv[1], *image_path = argv[2];
  size_t chat_len = 0, image_len = 0;
  char *chat = (char *)read_file(argv[3], &chat_len);
  unsigned char *image_bytes = read_file(image_path, &image_len);

  CHECK(strlen(idefics3_version()) > 0, "empty version");

  /* IDEFICS3_TEST_BACKEND=ascend runs everything on the Ascend backend (the simulator in our tests). */
  const char *backend = getenv("IDEFICS3_TEST_BACKEND");
  int on_ascend = backend != NULL && strcmp(backend, "ascend") == 0;
  Idefics3LoadOptions opts = {0};
  opts.dtype = IDEFICS3_DTYPE_F32;
  opts.threads = on_ascend ? 0 : 2;
  opts.backend = on_ascend ? IDEFICS3_BACKEND_ASCEND : IDEFICS3_BACKEND_CPU;
  Idefics3Model *model = NULL;
  CHECK(idefics3_model_load(dir, &opts, &model) == IDEFICS3_OK && model != NULL, "load failed");

  /* An image from a file, from memory, and as raw pixels. */
  Idefics3Image from_file = {0};
  from_file.path = image_path;
  Idefics3Request req = {0};
  req.prompt = "Describe this image.";
  req.images = &from_file;
  req.n_images = 1;
  req.max_new_tokens = 12;
  char *file_text = generate(model, &req, NULL, NULL);
  printf("file\t%s\n", file_text);

  Idefics3Image from_memory = {0};
  from_memory.data = image_bytes;
  from_memory.len = image_len;
  req.images = &from_memory;
  char *memory_text = generate(model, &req, NULL, NULL);
  printf("memory\t%s\n", memory_text);
  CHECK(strcmp(file_text, memory_text) == 0, "file and memory images differ");

  unsigned char rgb[40 * 30 * 3];
  for (int i = 0; i < 40 * 30 * 3; i++) rgb[i] = (unsigned char)((i * 7) % 251);
  Idefics3Image raw = {0};
  raw.rgb = rgb;
  raw.width = 40;
  raw.height = 30;
  raw.len = sizeof rgb;
  req.images = &raw;
  char *rgb_text = generate(model, &req, NULL, NULL);
  printf("rgb\t%s\n", rgb_text);

  /* Streaming gives the same text; a callback returning false stops generation. */
  req.images = &from_file;
  Stream *stream = calloc(1, sizeof(Stream));
  char *streamed = generate(model, &req, on_piece, stream);
  CHECK(strcmp(streamed, stream->text) == 0, "streamed pieces \"%s\" differ from the text \"%s\"", stream->text, streamed);
  CHECK(stream->calls > 1, "expected several pieces, got %d", stream->calls);
  printf("stream\t%s\n", stream->text);
  Stream *cancel = calloc(1, sizeof(Stream));
  cancel->stop_after = 2;
  char *cancelled = generate(model, &req, on_piece, cancel);
  CHECK(cancel->calls == 2, "callback ran %d times after asking to stop", cancel->calls);
  CHECK(strlen(cancelled) < strlen(streamed), "cancelled text is not shorter");
  printf("cancel\t%d\n", cancel->calls);

  /* A two-image, two-turn conversation. */
  Idefics3Image two[2] = {from_file, from_memory};
  Idefics3Request chat_req = {0};
  chat_req.chat_json = chat;
  chat_req.images = two;
  chat_req.n_images = 2;
  chat_req.max_new_tokens = 12;
  char *chat_text = generate(model, &chat_req, NULL, NULL);
  printf("chat\t%s\n", chat_text);

  /* Two threads on one model at once. */
  Job jobs[2] = {{model, &req, NULL}, {model, &chat_req, NULL}};
  pthread_t threads[2];
  for (int i = 0; i < 2; i++) CHECK(pthread_create(&threads[i], NULL, worker, &jobs[i]) == 0, "pthread_create");
  for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);
  CHECK(strcmp(jobs[0].text, file_text) == 0, "thread 0 differs");
  CHECK(strcmp(jobs[1].text, chat_text) == 0, "thread 1 differs");

  /* Every error path. */
  Idefics3Model *none = NULL;
  EXPECT_CODE(idefics3_model_load(NULL, NULL, &none), IDEFICS3_ERR_NULL_ARGUMENT);
  EXPECT_CODE(idefics3_model_load(dir, NULL, NULL), IDEFICS3_ERR_NULL_ARGUMENT);
  EXPECT_CODE(idefics3_model_load("/nonexistent/model", NULL, &none), IDEFICS3_ERR_IO);
  EXPECT_CODE(idefics3_model_load("\xff\xfe", NULL, &none), IDEFICS3_ERR_INVALID_UTF8);
  Idefics3LoadOptions bad_opts = {0};
  bad_opts.dtype = 9;
  EXPECT_CODE(idefics3_model_load(dir, &bad_opts, &none), IDEFICS3_ERR_INVALID_ARGUMENT);
  CHECK(none == NULL, "a failed load left a model");
  Idefics3LoadOptions bad_backend = {0};
  bad_backend.backend = 7;
  EXPECT_CODE(idefics3_model_load(dir, &bad_backend, &none), IDEFICS3_ERR_INVALID_ARGUMENT);
  Idefics3LoadOptions ascend = {0};
  ascend.backend = IDEFICS3_BACKEND_ASCEND;
  if (getenv("IDEFICS3_ASCEND_LIBS") == NULL) {
    /* Without a runtime (none on our machines unless the simulator is named): a device error. */
    EXPECT_CODE(idefics3_model_load(dir, &ascend, &none), IDEFICS3_ERR_DEVICE);
    CHECK(strstr(idefics3_last_error(), "Ascend") != NULL, "device error without a name");
  } else {
    /* A device the runtime does not have. */
    ascend.device = 7;
    EXPECT_CODE(idefics3_model_load(dir, &ascend, &none), IDEFICS3_ERR_INPUT);
    EXPECT_MESSAGE("--device 7");
  }
  /* Hostile thread counts are refused before any thread starts. */
  bad_opts.dtype = 0;
  bad_opts.threads = UINT32_MAX;
  EXPECT_CODE(idefics3_model_load(dir, &bad_opts, &none), IDEFICS3_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("threads");
  bad_opts.threads = 30000;
  EXPECT_CODE(idefics3_model_load(dir, &bad_opts, &none), IDEFICS3_ERR_INVALID_ARGUMENT);
  CHECK(none == NULL, "a failed load left a model");

  char *out = NULL;
  EXPECT_CODE(idefics3_generate(NULL, &req, NULL, NULL, &out), IDEFICS3_ERR_NULL_ARGUMENT);
  EXPECT_CODE(idefics3_generate(model, NULL, NULL, NULL, &out), IDEFICS3_ERR_NULL_ARGUMENT);
  EXPECT_CODE(idefics3_generate(model, &req, NULL, NULL, NULL), IDEFICS3_ERR_NULL_ARGUMENT);
  Idefics3Request bad = req;
  bad.prompt = "\xff\xfe";
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_INVALID_UTF8);
  bad = req;
  bad.prompt = NULL;
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_NULL_ARGUMENT);
  bad = req;
  bad.chat_json = chat;
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_INVALID_ARGUMENT);
  bad = req;
  bad.temperature = -1.0f;
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_INVALID_ARGUMENT);
  bad = req;
  bad.images = NULL;
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_NULL_ARGUMENT);
  Idefics3Image missing = {0};
  missing.path = "/nonexistent/cat.png";
  bad = req;
  bad.images = &missing;
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_IO);
  Idefics3Image garbage = {0};
  garbage.data = (const uint8_t *)"not an image";
  garbage.len = 12;
  bad.images = &garbage;
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_INPUT);
  Idefics3Image flat = {0};
  flat.rgb = rgb;
  flat.width = 0;
  flat.height = 30;
  bad.images = &flat;
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_INVALID_ARGUMENT);
  /* Hostile raw images: len is the size of the rgb buffer and must be width*height*3; nothing is read
   * before that holds (valgrind would report a read past the 300-byte buffer). */
  unsigned char *small = malloc(300);
  memset(small, 7, 300);
  Idefics3Image short_rgb = {0};
  short_rgb.rgb = small;
  short_rgb.len = 300;
  short_rgb.width = 64;
  short_rgb.height = 64;
  bad.images = &short_rgb;
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("12288");
  short_rgb.len = 0; /* len left unset */
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_INVALID_ARGUMENT);
  short_rgb.len = 3;
  short_rgb.width = 65536;
  short_rgb.height = 65536;
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("exceeds the limit");
  short_rgb.width = UINT32_MAX;
  short_rgb.height = UINT32_MAX;
  short_rgb.len = SIZE_MAX;
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("exceeds the limit");
  /* Two sources for one image: refused, not silently resolved. */
  Idefics3Image two_sources = raw;
  two_sources.path = image_path;
  bad.images = &two_sources;
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("path and rgb");
  two_sources = from_memory;
  two_sources.rgb = rgb;
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("data and rgb");
  free(small);
  Idefics3Image empty = {0};
  bad.images = &empty;
  EXPECT_CODE(idefics3_generate(model, &bad, NULL, NULL, &out), IDEFICS3_ERR_NULL_ARGUMENT);
  Idefics3Request wrong_count = chat_req;
  wrong_count.n_images = 1;
  EXPECT_CODE(idefics3_generate(model, &wrong_count, NULL, NULL, &out), IDEFICS3_ERR_INPUT);
  Idefics3Request bad_json = chat_req;
  bad_json.chat_json = "[{\"role\": ";
  EXPECT_CODE(idefics3_generate(model, &bad_json, NULL, NULL, &out), IDEFICS3_ERR_INPUT);
  CHECK(out == NULL, "a failed call left text");

  idefics3_string_free(file_text);
  idefics3_string_free(memory_text);
  idefics3_string_free(rgb_text);
  idefics3_string_free(streamed);
  idefics3_string_free(cancelled);
  idefics3_string_free(chat_text);
  idefics3_string_free(jobs[0].text);
  idefics3_string_free(jobs[1].text);
  idefics3_string_free(NULL);
  idefics3_model_free(model);
  idefics3_model_free(NULL);
  free(stream);
  free(cancel);
  free(chat);
  free(image_bytes);
  printf("ok\n");
  return 0;
}
