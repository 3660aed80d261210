/* ISA-L inflate shim for src/codec/gunzip.rs: loads libisal.so.2 with dlopen at first use and inflates
 * one gzip member body (deflate data + CRC32/ISIZE trailer) at a time.
 *
 * Why a shim: `struct inflate_state` is a large struct whose layout comes from the ISA-L header,
 * so only C compiled against that header may touch it; Rust sees an opaque pointer. Why dlopen:
 * the binary must start on machines without libisal2 (no DT_NEEDED entry); then
 * obi_isal_available() says 0 and Rust uses flate2. The gzip header is parsed by the Rust side,
 * which hands over the bytes right after it; ISA-L (ISAL_GZIP_NO_HDR_VER) inflates and checks
 * the 8-byte trailer (CRC32 and ISIZE) itself. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <isa-l/igzip_lib.h>

/* Statuses of obi_inflate_step; keep in step with `Status` in src/codec/gunzip.rs. */
#define OBI_OK 0           /* produced output or made progress; call again */
#define OBI_NEED_INPUT 1   /* consumed all input, produced nothing, member not finished */
#define OBI_MEMBER_END 2   /* the member and its trailer are done and the trailer matched */
#define OBI_BAD_DATA (-1)  /* invalid deflate data */
#define OBI_BAD_CHECKSUM (-2) /* CRC32 or ISIZE of the trailer does not match the output */

static void (*p_init)(struct inflate_state *);
static void (*p_reset)(struct inflate_state *);
static int (*p_inflate)(struct inflate_state *);
static int loaded;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void load(void) {
    void *h = dlopen("libisal.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return;
    p_init = (void (*)(struct inflate_state *))dlsym(h, "isal_inflate_init");
    p_reset = (void (*)(struct inflate_state *))dlsym(h, "isal_inflate_reset");
    p_inflate = (int (*)(struct inflate_state *))dlsym(h, "isal_inflate");
    if (p_init && p_reset && p_inflate)
        loaded = 1;
    else
        dlclose(h);
}

int obi_isal_available(void) {
    pthread_once(&load_once, load);
    return loaded;
}

static void start_member(struct inflate_state *s) {
    s->crc_flag = ISAL_GZIP_NO_HDR_VER; /* raw deflate, then verify the gzip trailer */
    s->hist_bits = 0;                   /* full 32 KiB window */
}

/* A fresh state ready for the first member's body, or NULL (library missing, out of memory). */
void *obi_inflate_new(void) {
    if (!obi_isal_available())
        return NULL;
    struct inflate_state *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    p_init(s);
    start_member(s);
    return s;
}

void obi_inflate_free(void *state) { free(state); }

/* Ready for the next member's body (after OBI_MEMBER_END). */
void obi_inflate_reset(void *state) {
    struct inflate_state *s = state;
    p_reset(s);
    start_member(s);
}

int obi_inflate_step(void *state, const uint8_t *in, size_t in_len, size_t *consumed,
                     uint8_t *out, size_t out_len, size_t *produced) {
    struct inflate_state *s = state;
    uint32_t il = in_len > UINT32_MAX ? UINT32_MAX : (uint32_t)in_len;
    uint32_t ol = out_len > UINT32_MAX ? UINT32_MAX : (uint32_t)out_len;
    s->next_in = (uint8_t *)in; /* isal_inflate never writes through next_in */
    s->avail_in = il;
    s->next_out = out;
    s->avail_out = ol;
    int ret = p_inflate(s);
    *consumed = il - s->avail_in;
    *produced = ol - s->avail_out;
    if (ret == ISAL_INCORRECT_CHECKSUM)
        return OBI_BAD_CHECKSUM;
    if (ret < 0)
        return OBI_BAD_DATA;
    if (s->block_state == ISAL_BLOCK_FINISH)
        return OBI_MEMBER_END;
    if (*produced == 0 && s->avail_in == 0)
        return OBI_NEED_INPUT;
    return OBI_OK;
}
