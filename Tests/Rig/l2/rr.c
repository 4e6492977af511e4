/* TCP request/response: one connection, TCP_NODELAY, a 1-byte request and the peer's 1-byte
 * answer, back to back for a set time (netperf's TCP_RR with its default sizes). Each
 * transaction is a full round trip through both VMM datapaths and the guest's interrupts, so
 * the rate is the latency figure the rig compares between VMMs (issue 14), where the bulk
 * transfers measure throughput. The peer echoes (busybox nc -e cat in L1).
 * Usage: rr ADDRESS PORT SECONDS. Prints "transactions=N seconds=S per_s=X". Built static by
 * build-initramfs.sh (the L2 image has no libc). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: rr ADDRESS PORT SECONDS\n"); return 2; }
    struct sockaddr_in peer = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2])) };
    if (inet_pton(AF_INET, argv[1], &peer.sin_addr) != 1) { fprintf(stderr, "rr: bad address %s\n", argv[1]); return 2; }
    double limit = atof(argv[3]);
    int fd = -1;
    /* The listener starts with the VMM; give it a few seconds if it is not there yet. */
    for (int attempt = 0; attempt < 50; attempt++) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) { perror("rr: socket"); return 1; }
        if (connect(fd, (struct sockaddr *)&peer, sizeof peer) == 0) break;
        close(fd);
        fd = -1;
        usleep(100000);
    }
    if (fd < 0) { perror("rr: connect"); return 1; }
    int on = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) < 0) { perror("rr: TCP_NODELAY"); return 1; }
    unsigned long long transactions = 0;
    char byte = 'r';
    double start = now(), elapsed = 0;
    while (elapsed < limit) {
        if (write(fd, &byte, 1) != 1) { perror("rr: write"); return 1; }
        ssize_t got = read(fd, &byte, 1);
        if (got != 1) { fprintf(stderr, "rr: the peer %s after %llu transactions\n", got == 0 ? "closed" : "failed", transactions); return 1; }
        transactions++;
        /* The clock every 16 transactions: cheap next to a round trip through two VMMs. */
        if ((transactions & 15) == 0) elapsed = now() - start;
    }
    elapsed = now() - start;
    printf("transactions=%llu seconds=%.2f per_s=%.0f\n", transactions, elapsed, (double)transactions / elapsed);
    close(fd);
    return 0;
}
