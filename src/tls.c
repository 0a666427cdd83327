/*
 * TLS contexts: one per TLS listener (termination) and one per upstream
 * (origination, with certificate and host-name verification).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "regcache.h"

/* The newest queued OpenSSL error as text, and the queue cleared. */
void
tls_error_string(char *buf, size_t len)
{
	unsigned long	e, last = 0;

	while ((e = ERR_get_error()) != 0)
		last = e;
	if (last == 0)
		snprintf(buf, len, "unknown TLS error");
	else
		ERR_error_string_n(last, buf, len);
}

/* A server context for one listener: TLS 1.2 at least, the chain and key. */
SSL_CTX *
tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX	*ctx;
	char	 e[256];

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		goto fail;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		tls_error_string(e, sizeof(e));
		snprintf(err, errlen, "%s: %s", cert, e);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		tls_error_string(e, sizeof(e));
		snprintf(err, errlen, "%s: %s", key, e);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
 fail:
	tls_error_string(e, sizeof(e));
	snprintf(err, errlen, "%s", e);
	return NULL;
}

/*
 * A client context: ca_file, the system store, or both (with_system), and
 * peer verification unless verify is off.  Each upstream has one for
 * itself (its ca_file alone, its tls_verify) and one for other hosts it
 * sends us to (token realms, redirect targets: the system store plus its
 * ca_file, always verified).  Host names are set per connection (SNI and
 * SSL_set1_host) in upstream_http.c.
 */
SSL_CTX *
tls_client_ctx(const char *ca_file, int with_system, int verify, char *err,
    size_t errlen)
{
	SSL_CTX	*ctx;
	char	 e[256];

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		goto fail;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (ca_file != NULL &&
	    SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		tls_error_string(e, sizeof(e));
		snprintf(err, errlen, "%s: %s", ca_file, e);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if ((ca_file == NULL || with_system) &&
	    SSL_CTX_set_default_verify_paths(ctx) != 1) {
		SSL_CTX_free(ctx);
		goto fail;
	}
	SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
	    NULL);
	return ctx;
 fail:
	tls_error_string(e, sizeof(e));
	snprintf(err, errlen, "%s", e);
	return NULL;
}
