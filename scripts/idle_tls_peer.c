/* The smallest client that does what an idle agent does on the wire: one mutual-TLS 1.3
 * connection to the controller, held open, with the system's OpenSSL. scripts/idle_footprint.sh
 * measures its memory beside the agent's, in the same run, so that the agent's figure is read
 * against what any client holding such a connection costs on this machine (shared libraries
 * count differently in RSS and PSS).
 *
 *   idle_tls_peer HOST PORT CA.pem CERT.pem KEY.pem
 *
 * Prints "connected" once the handshake is done, then sleeps until it is killed. */
#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char *what) {
    fprintf(stderr, "idle_tls_peer: %s\n", what);
    ERR_print_errors_fp(stderr);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: idle_tls_peer HOST PORT CA.pem CERT.pem KEY.pem\n");
        return 64;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return fail("no TLS context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    if (SSL_CTX_load_verify_locations(ctx, argv[3], NULL) != 1) return fail("cannot load the CA");
    if (SSL_CTX_use_certificate_chain_file(ctx, argv[4]) != 1) return fail("cannot load the certificate");
    if (SSL_CTX_use_PrivateKey_file(ctx, argv[5], SSL_FILETYPE_PEM) != 1) return fail("cannot load the key");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* gRPC runs over HTTP/2, which the controller's TLS requires by ALPN. */
    static const unsigned char alpn[] = {2, 'h', '2'};
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn);

    struct addrinfo hints = {0}, *found;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(argv[1], argv[2], &hints, &found) != 0) return fail("cannot resolve the host");
    int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    if (fd < 0 || connect(fd, found->ai_addr, found->ai_addrlen) != 0) return fail("cannot connect");
    freeaddrinfo(found);

    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, argv[1]);
    SSL_set1_host(ssl, argv[1]);
    if (SSL_connect(ssl) != 1) return fail("the TLS handshake failed");
    /* The HTTP/2 connection preface, so that the controller holds the connection as a client's. */
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    static const unsigned char settings[] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    SSL_write(ssl, preface, (int)strlen(preface));
    SSL_write(ssl, settings, sizeof settings);
    printf("connected\n");
    fflush(stdout);
    for (;;) pause();
}
