/*
 * mbedtls-client: a TLS client configured as a Pico W firmware configures mbedtls, used by picogate's
 * tests against its TLS device port (internal/e2e/tls_test.go) and for the measurements in docs/tls.md.
 *
 * Like a board, it pins one CA, sends no client certificate, offers only ECDHE-ECDSA with AES-128-GCM
 * or ChaCha20-Poly1305 over X25519 or P-256 with SHA-256 signatures, TLS 1.2, session tickets on, and
 * it refuses any record larger than its input buffer (--max-record, as a firmware built with a small
 * MBEDTLS_SSL_IN_CONTENT_LEN would; Debian's library is built with 16 KiB, so the limit is enforced
 * here, on the wire). Each --request FILE is sent on a new connection, as the reference firmware does
 * (Connection: close), resuming the previous connection's session.
 *
 * For each connection it prints one JSON line: the outcome, the negotiated version and suite, whether
 * the session was resumed, the bytes and round trips of the handshake, the largest records received,
 * the public-key operations it did (counted by wrapping mbedtls's elliptic-curve functions at link
 * time) and the heap mbedtls used (counted by wrapping calloc and free).
 *
 * Build (static, so the wrapped symbols are mbedtls's own calls):
 *   cc -O2 -o mbedtls-client client.c \
 *     -Wl,--wrap=calloc,--wrap=free,--wrap=mbedtls_ecp_mul_restartable,--wrap=mbedtls_ecp_muladd_restartable \
 *     -l:libmbedtls.a -l:libmbedx509.a -l:libmbedcrypto.a -lpthread
 */
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mbedtls/ctr_drbg.h"
#include "mbedtls/ecp.h"
#include "mbedtls/entropy.h"
#include "mbedtls/error.h"
#include "mbedtls/net_sockets.h"
#include "mbedtls/ssl.h"
#include "mbedtls/x509_crt.h"

/* ---- heap accounting: every calloc of mbedtls goes through here ---- */

void *__real_calloc(size_t n, size_t size);
void __real_free(void *p);

static size_t heap_now, heap_peak, heap_big; /* big: allocations of 16 KiB or more (record buffers) */
#define HDR 16 /* keeps the block 16-byte aligned */

void *__wrap_calloc(size_t n, size_t size) {
    size_t bytes = n * size;
    if (size != 0 && bytes / size != n) return NULL;
    unsigned char *p = __real_calloc(1, bytes + HDR);
    if (p == NULL) return NULL;
    memcpy(p, &bytes, sizeof bytes);
    heap_now += bytes;
    if (heap_now > heap_peak) heap_peak = heap_now;
    if (bytes >= 16384) heap_big += bytes;
    return p + HDR;
}

void __wrap_free(void *q) {
    if (q == NULL) return;
    unsigned char *p = (unsigned char *)q - HDR;
    size_t bytes;
    memcpy(&bytes, p, sizeof bytes);
    heap_now -= bytes;
    __real_free(p);
}

/* ---- public-key operations: scalar multiplications (ECDH) and ECDSA verifications ---- */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int ecp_mul_ops, ecdsa_verify_ops;
static double pk_ms;

int __real_mbedtls_ecp_mul_restartable(mbedtls_ecp_group *grp, mbedtls_ecp_point *R, const mbedtls_mpi *m,
                                       const mbedtls_ecp_point *P, int (*f_rng)(void *, unsigned char *, size_t),
                                       void *p_rng, mbedtls_ecp_restart_ctx *rs_ctx);
int __wrap_mbedtls_ecp_mul_restartable(mbedtls_ecp_group *grp, mbedtls_ecp_point *R, const mbedtls_mpi *m,
                                       const mbedtls_ecp_point *P, int (*f_rng)(void *, unsigned char *, size_t),
                                       void *p_rng, mbedtls_ecp_restart_ctx *rs_ctx) {
    double t = now_ms();
    int ret = __real_mbedtls_ecp_mul_restartable(grp, R, m, P, f_rng, p_rng, rs_ctx);
    pk_ms += now_ms() - t;
    ecp_mul_ops++;
    return ret;
}

int __real_mbedtls_ecp_muladd_restartable(mbedtls_ecp_group *grp, mbedtls_ecp_point *R, const mbedtls_mpi *m,
                                          const mbedtls_ecp_point *P, const mbedtls_mpi *n,
                                          const mbedtls_ecp_point *Q, mbedtls_ecp_restart_ctx *rs_ctx);
int __wrap_mbedtls_ecp_muladd_restartable(mbedtls_ecp_group *grp, mbedtls_ecp_point *R, const mbedtls_mpi *m,
                                          const mbedtls_ecp_point *P, const mbedtls_mpi *n,
                                          const mbedtls_ecp_point *Q, mbedtls_ecp_restart_ctx *rs_ctx) {
    double t = now_ms();
    int ret = __real_mbedtls_ecp_muladd_restartable(grp, R, m, P, n, Q, rs_ctx);
    pk_ms += now_ms() - t;
    ecdsa_verify_ops++; /* ECDSA verification is the only caller: u1*G + u2*Q */
    return ret;
}

/* ---- the wire: byte, round-trip and record counters around the socket ---- */

struct wire {
    int fd;
    int handshake_done;
    size_t max_record;   /* the emulated input buffer: MBEDTLS_SSL_IN_CONTENT_LEN */
    size_t aead_overhead; /* explicit nonce and tag of the negotiated suite, once known */
    size_t out, in, hs_out, hs_in;
    int rtt, hs_rtt, last_was_send;
    int records_in, server_ccs;
    size_t max_hs_record, max_app_record; /* plaintext bytes */
    unsigned char hdr[5];
    size_t hdr_len, skip; /* record parser: header bytes held, body bytes left */
    int too_big;
    size_t too_big_len;
};

static void parse_records(struct wire *w, const unsigned char *p, size_t n) {
    while (n > 0) {
        if (w->skip > 0) {
            size_t k = n < w->skip ? n : w->skip;
            w->skip -= k, p += k, n -= k;
            continue;
        }
        w->hdr[w->hdr_len++] = *p++, n--;
        if (w->hdr_len < 5) continue;
        w->hdr_len = 0;
        size_t len = (size_t)w->hdr[3] << 8 | w->hdr[4];
        w->skip = len;
        w->records_in++;
        size_t plain = len;
        if (w->hdr[0] == 20) { /* ChangeCipherSpec: what follows is encrypted */
            w->server_ccs = 1;
            continue;
        }
        if (w->server_ccs) plain = w->aead_overhead && len > w->aead_overhead ? len - w->aead_overhead : len;
        if (w->hdr[0] == 23) {
            if (plain > w->max_app_record) w->max_app_record = plain;
        } else if (plain > w->max_hs_record) {
            w->max_hs_record = plain;
        }
        /* Before the suite is known only the server's Finished is encrypted: a few dozen bytes. */
        if (w->max_record > 0 && plain > w->max_record && (!w->server_ccs || w->aead_overhead)) {
            w->too_big = 1;
            w->too_big_len = plain;
        }
    }
}

static int wire_send(void *ctx, const unsigned char *buf, size_t len) {
    struct wire *w = ctx;
    ssize_t n = send(w->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0) return errno == EINTR ? MBEDTLS_ERR_SSL_WANT_WRITE : MBEDTLS_ERR_NET_SEND_FAILED;
    w->out += n;
    if (!w->handshake_done) w->hs_out += n;
    w->last_was_send = 1;
    return (int)n;
}

static int wire_recv(void *ctx, unsigned char *buf, size_t len) {
    struct wire *w = ctx;
    if (w->too_big) return MBEDTLS_ERR_SSL_INVALID_RECORD;
    ssize_t n = recv(w->fd, buf, len, 0);
    if (n < 0) return errno == EINTR ? MBEDTLS_ERR_SSL_WANT_READ : MBEDTLS_ERR_NET_RECV_FAILED;
    if (n == 0) return 0; /* the peer closed: mbedtls reports MBEDTLS_ERR_SSL_CONN_EOF or close_notify */
    if (w->last_was_send) { /* waited for the peer's answer to what was sent: one round trip */
        w->rtt++;
        if (!w->handshake_done) w->hs_rtt++;
        w->last_was_send = 0;
    }
    w->in += n;
    if (!w->handshake_done) w->hs_in += n;
    parse_records(w, buf, (size_t)n);
    if (w->too_big) return MBEDTLS_ERR_SSL_INVALID_RECORD;
    return (int)n;
}

/* ---- options ---- */

struct options {
    const char *host, *port, *ca, *servername, *out_dir;
    const char *requests[16];
    int n_requests;
    int suites[4], curves_set;
    mbedtls_ecp_group_id curves[4];
    size_t max_record;
    int mfl;
};

static void usage(void) {
    fprintf(stderr, "usage: mbedtls-client --host H --port P --ca FILE --servername NAME [--suites chacha,aes] [--curves x25519,p256]\n"
                    "                      [--max-record BYTES] [--mfl 512|1024|2048|4096] [--out DIR] --request FILE [--request FILE ...]\n");
    exit(2);
}

static int parse_list(const char *arg, const char *const names[], const int values[], int n, int out[], int max) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", arg);
    int k = 0;
    for (char *tok = strtok(buf, ","); tok != NULL; tok = strtok(NULL, ",")) {
        int found = 0;
        for (int i = 0; i < n; i++) {
            if (strcmp(tok, names[i]) == 0 && k < max) out[k++] = values[i], found = 1;
        }
        if (!found) {
            fprintf(stderr, "mbedtls-client: unknown %s\n", tok);
            exit(2);
        }
    }
    return k;
}

static void parse_options(int argc, char **argv, struct options *o) {
    static const char *const suite_names[] = {"aes", "chacha"};
    static const int suite_ids[] = {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256};
    static const char *const curve_names[] = {"x25519", "p256"};
    static const int curve_ids[] = {MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1};
    memset(o, 0, sizeof *o);
    /* A board without AES hardware lists ChaCha20-Poly1305 first; Go then picks it. */
    o->suites[0] = MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256;
    o->suites[1] = MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
    o->curves[0] = MBEDTLS_ECP_DP_CURVE25519, o->curves[1] = MBEDTLS_ECP_DP_SECP256R1, o->curves[2] = MBEDTLS_ECP_DP_NONE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) usage();
        i++;
        if (strcmp(a, "--host") == 0) o->host = v;
        else if (strcmp(a, "--port") == 0) o->port = v;
        else if (strcmp(a, "--ca") == 0) o->ca = v;
        else if (strcmp(a, "--servername") == 0) o->servername = v;
        else if (strcmp(a, "--out") == 0) o->out_dir = v;
        else if (strcmp(a, "--max-record") == 0) o->max_record = (size_t)atol(v);
        else if (strcmp(a, "--mfl") == 0) o->mfl = atoi(v);
        else if (strcmp(a, "--request") == 0 && o->n_requests < 16) o->requests[o->n_requests++] = v;
        else if (strcmp(a, "--suites") == 0) {
            int n = parse_list(v, suite_names, suite_ids, 2, o->suites, 3);
            o->suites[n] = 0;
        } else if (strcmp(a, "--curves") == 0) {
            int ids[3];
            int n = parse_list(v, curve_names, curve_ids, 2, ids, 3);
            for (int k = 0; k < n; k++) o->curves[k] = (mbedtls_ecp_group_id)ids[k];
            o->curves[n] = MBEDTLS_ECP_DP_NONE;
        } else usage();
    }
    if (!o->host || !o->port || !o->ca || !o->servername || o->n_requests == 0) usage();
}

/* ---- one connection ---- */

static int connect_tcp(const char *host, const char *port) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, port, &hints, &res) != 0) return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) close(fd), fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = __real_calloc(1, (size_t)n + 1); /* not counted: the request is the firmware's, not mbedtls's */
    if (b == NULL || fread(b, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        __real_free(b);
        return NULL;
    }
    fclose(f);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

static void json_error(int conn, const char *stage, int ret, const mbedtls_ssl_context *ssl, const struct wire *w) {
    char msg[160] = "";
    if (ret != 0) mbedtls_strerror(ret, msg, sizeof msg);
    char verify[256] = "";
    uint32_t flags = ssl ? mbedtls_ssl_get_verify_result(ssl) : 0;
    if (flags != 0 && flags != (uint32_t)-1) {
        mbedtls_x509_crt_verify_info(verify, sizeof verify, "", flags);
        for (char *p = verify; *p; p++)
            if (*p == '\n') *p = ';';
    }
    if (w && w->too_big) snprintf(msg, sizeof msg, "record of %zu bytes is over the %zu-byte input buffer", w->too_big_len, w->max_record);
    printf("{\"conn\":%d,\"ok\":false,\"stage\":\"%s\",\"error\":\"-0x%04x %s\",\"verify_flags\":%u,\"verify\":\"%s\"}\n",
           conn, stage, (unsigned)-ret, msg, flags == (uint32_t)-1 ? 0 : flags, verify);
}

/* run_one connects, handshakes (resuming *saved when set), sends the request and reads the answer to
 * the end, then keeps the session in *saved for the next connection. */
static int run_one(int conn, const struct options *o, mbedtls_ssl_config *conf, mbedtls_ssl_session *saved, int have_saved) {
    size_t req_len;
    char *req = read_file(o->requests[conn - 1], &req_len);
    if (req == NULL) {
        fprintf(stderr, "mbedtls-client: cannot read %s\n", o->requests[conn - 1]);
        return -1;
    }
    struct wire w = {.max_record = o->max_record};
    w.fd = connect_tcp(o->host, o->port);
    if (w.fd < 0) {
        printf("{\"conn\":%d,\"ok\":false,\"stage\":\"connect\",\"error\":\"%s\"}\n", conn, strerror(errno));
        __real_free(req);
        return -1;
    }
    size_t heap_base = heap_now;
    heap_peak = heap_now, heap_big = 0, ecp_mul_ops = 0, ecdsa_verify_ops = 0, pk_ms = 0;

    mbedtls_ssl_context ssl;
    mbedtls_ssl_init(&ssl);
    int ret = mbedtls_ssl_setup(&ssl, conf);
    if (ret == 0) ret = mbedtls_ssl_set_hostname(&ssl, o->servername);
    if (ret == 0 && have_saved) ret = mbedtls_ssl_set_session(&ssl, saved);
    if (ret != 0) {
        json_error(conn, "setup", ret, NULL, NULL);
        goto out;
    }
    mbedtls_ssl_set_bio(&ssl, &w, wire_send, wire_recv, NULL);

    /* Step by step, to see which states the handshake went through: a resumed one skips the server's
     * certificate. */
    int saw_certificate = 0;
    double t0 = now_ms();
    while (ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER) {
        if (ssl.state == MBEDTLS_SSL_SERVER_CERTIFICATE) saw_certificate = 1;
        ret = mbedtls_ssl_handshake_step(&ssl);
        if (ret != 0 && ret != MBEDTLS_ERR_SSL_WANT_READ && ret != MBEDTLS_ERR_SSL_WANT_WRITE) {
            json_error(conn, "handshake", ret, &ssl, &w);
            goto out;
        }
    }
    double hs_ms = now_ms() - t0;
    size_t hs_heap_peak = heap_peak;
    int hs_ecp = ecp_mul_ops, hs_verify = ecdsa_verify_ops;
    double hs_pk_ms = pk_ms;
    w.handshake_done = 1;
    const mbedtls_ssl_ciphersuite_t *info = mbedtls_ssl_ciphersuite_from_id(mbedtls_ssl_get_ciphersuite_id(mbedtls_ssl_get_ciphersuite(&ssl)));
    w.aead_overhead = info && info->cipher == MBEDTLS_CIPHER_CHACHA20_POLY1305 ? 16 : 24;

    for (size_t off = 0; off < req_len;) {
        ret = mbedtls_ssl_write(&ssl, (const unsigned char *)req + off, req_len - off);
        if (ret == MBEDTLS_ERR_SSL_WANT_WRITE || ret == MBEDTLS_ERR_SSL_WANT_READ) continue;
        if (ret < 0) {
            json_error(conn, "write", ret, &ssl, &w);
            goto out;
        }
        off += (size_t)ret;
    }
    FILE *resp = NULL;
    if (o->out_dir) {
        char path[512];
        snprintf(path, sizeof path, "%s/resp-%d", o->out_dir, conn);
        resp = fopen(path, "wb");
    }
    unsigned char buf[1024];
    char head[16] = "";
    size_t got = 0;
    for (;;) {
        ret = mbedtls_ssl_read(&ssl, buf, sizeof buf);
        if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) continue;
        if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || ret == 0 || (ret == MBEDTLS_ERR_SSL_CONN_EOF && got > 0)) break;
        if (ret < 0) {
            if (resp) fclose(resp);
            json_error(conn, "read", ret, &ssl, &w);
            goto out;
        }
        if (got < sizeof head - 1) memcpy(head + got, buf, (size_t)ret < sizeof head - 1 - got ? (size_t)ret : sizeof head - 1 - got);
        got += (size_t)ret;
        if (resp) fwrite(buf, 1, (size_t)ret, resp);
    }
    if (resp) fclose(resp);
    int status = 0;
    sscanf(head, "HTTP/1.%*d %d", &status);

    if ((ret = mbedtls_ssl_get_session(&ssl, saved)) != 0) {
        json_error(conn, "session", ret, &ssl, &w);
        goto out;
    }
    printf("{\"conn\":%d,\"ok\":true,\"status\":%d,\"response_bytes\":%zu,\"version\":\"%s\",\"suite\":\"%s\",\"resumed\":%s,"
           "\"mfl_acknowledged\":%s,\"hs_ms\":%.2f,\"hs_bytes_out\":%zu,\"hs_bytes_in\":%zu,\"hs_round_trips\":%d,"
           "\"bytes_out\":%zu,\"bytes_in\":%zu,\"round_trips\":%d,\"records_in\":%d,\"max_handshake_record\":%zu,\"max_app_record\":%zu,"
           "\"hs_ecp_mul\":%d,\"hs_ecdsa_verify\":%d,\"hs_pk_ms\":%.2f,\"heap_base\":%zu,\"hs_heap_peak\":%zu,\"heap_peak\":%zu,\"heap_record_buffers\":%zu}\n",
           conn, status, got, mbedtls_ssl_get_version(&ssl), mbedtls_ssl_get_ciphersuite(&ssl), saw_certificate ? "false" : "true",
           ssl.session->mfl_code != MBEDTLS_SSL_MAX_FRAG_LEN_NONE ? "true" : "false", hs_ms, w.hs_out, w.hs_in, w.hs_rtt,
           w.out, w.in, w.rtt, w.records_in, w.max_hs_record, w.max_app_record,
           hs_ecp, hs_verify, hs_pk_ms, heap_base, hs_heap_peak, heap_peak, heap_big);
    ret = 0;
out:
    fflush(stdout);
    mbedtls_ssl_close_notify(&ssl);
    mbedtls_ssl_free(&ssl);
    close(w.fd);
    __real_free(req);
    return ret;
}

int main(int argc, char **argv) {
    struct options o;
    parse_options(argc, argv, &o);

    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca;
    mbedtls_ssl_config conf;
    mbedtls_ssl_session saved;
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_x509_crt_init(&ca);
    mbedtls_ssl_config_init(&conf);
    mbedtls_ssl_session_init(&saved);

    int ret = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, (const unsigned char *)"picogate", 8);
    if (ret == 0 && (ret = mbedtls_x509_crt_parse_file(&ca, o.ca)) != 0) json_error(0, "ca", ret, NULL, NULL);
    if (ret == 0) ret = mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) return 1;
    mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
    mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_REQUIRED); /* the pinned CA, the name */
    mbedtls_ssl_conf_ca_chain(&conf, &ca, NULL);
    mbedtls_ssl_conf_ciphersuites(&conf, o.suites);
    mbedtls_ssl_conf_curves(&conf, o.curves);
    mbedtls_ssl_conf_min_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3); /* TLS 1.2 */
    mbedtls_ssl_conf_max_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_session_tickets(&conf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
    /* ECDSA with SHA-256 only: in TLS 1.2 Go signs its key exchange with the hash the client lists
     * first, and mbedtls lists SHA-512 first by default, which a board would then have to compute. */
    static const int sig_hashes[] = {MBEDTLS_MD_SHA256, MBEDTLS_MD_NONE};
    mbedtls_ssl_conf_sig_hashes(&conf, sig_hashes);
    if (o.mfl) {
        unsigned char code = o.mfl == 512 ? MBEDTLS_SSL_MAX_FRAG_LEN_512 : o.mfl == 1024 ? MBEDTLS_SSL_MAX_FRAG_LEN_1024
                           : o.mfl == 2048 ? MBEDTLS_SSL_MAX_FRAG_LEN_2048 : MBEDTLS_SSL_MAX_FRAG_LEN_4096;
        mbedtls_ssl_conf_max_frag_len(&conf, code);
    }

    int failed = 0;
    for (int i = 0; i < o.n_requests; i++) {
        if (run_one(i + 1, &o, &conf, &saved, i > 0) != 0) failed = 1;
    }
    mbedtls_ssl_session_free(&saved);
    mbedtls_ssl_config_free(&conf);
    mbedtls_x509_crt_free(&ca);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    return failed;
}
