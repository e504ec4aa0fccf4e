#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

// OpenSSL calls that are macros (invisible to Swift), as small functions.

/// SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION): no SSL 3, TLS 1.0 or 1.1.
static inline int cssl_ctx_require_tls12(SSL_CTX *ctx) {
  return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}

/// SSL_OP_IGNORE_UNEXPECTED_EOF (OpenSSL 3): a peer that closes without close_notify is an end
/// of stream (SSL_ERROR_ZERO_RETURN), as on a plain socket, rather than a protocol error.
/// OpenSSL 1.1 reports it as SSL_ERROR_SYSCALL without errno, which TLSChannel also reads as
/// the end of the stream.
static inline void cssl_ctx_ignore_unexpected_eof(SSL_CTX *ctx) {
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#else
  (void)ctx;
#endif
}

/// SSL_set_tlsext_host_name: the server name indication (SNI) sent in the ClientHello.
static inline int cssl_set_sni(SSL *ssl, const char *name) {
  return (int)SSL_set_tlsext_host_name(ssl, name);
}

/// SSL_set_app_data / SSL_get_app_data: the pointer the PSK callback finds its key through.
static inline int cssl_set_app_data(SSL *ssl, void *data) { return SSL_set_app_data(ssl, data); }
static inline void *cssl_get_app_data(const SSL *ssl) { return SSL_get_app_data(ssl); }
