/* 4 KiB random reads with O_DIRECT, one at a time (queue depth 1), for a set time: the IOPS the
 * rig's vfio-nvme compares between VMMs (issue 13's benchmark, in place of fio, which the L2
 * image does not carry). Offsets are 4 KiB-aligned and uniform over the whole device, from a
 * fixed-seed xorshift, so every run reads the same sequence.
 * Usage: randread DEVICE SECONDS. Prints "ios=N seconds=S iops=X". Built static by
 * build-initramfs.sh (the L2 image has no libc). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: randread DEVICE SECONDS\n"); return 2; }
    double limit = atof(argv[2]);
    int fd = open(argv[1], O_RDONLY | O_DIRECT);
    if (fd < 0) { perror("randread: open"); return 1; }
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) < 0 || size < 4096) { perror("randread: BLKGETSIZE64"); return 1; }
    uint64_t blocks = size / 4096;
    void *buffer;
    if (posix_memalign(&buffer, 4096, 4096) != 0) { fprintf(stderr, "randread: no memory\n"); return 1; }
    uint64_t state = 0x9E3779B97F4A7C15ull, ios = 0;
    double start = now(), elapsed = 0;
    while (elapsed < limit) {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
        if (pread(fd, buffer, 4096, (off_t)((state % blocks) * 4096)) != 4096) { perror("randread: pread"); return 1; }
        ios++;
        /* The clock every 16 reads: cheap next to a read that leaves the guest. */
        if ((ios & 15) == 0) elapsed = now() - start;
    }
    elapsed = now() - start;
    printf("ios=%llu seconds=%.2f iops=%.0f\n", (unsigned long long)ios, elapsed, (double)ios / elapsed);
    return 0;
}
