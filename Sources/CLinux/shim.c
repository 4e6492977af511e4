#define _GNU_SOURCE
#include "CLinux.h"
#include <string.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <sys/socket.h>

int sy_ioctl_ptr(int fd, unsigned long request, void *argument) {
    return ioctl(fd, request, argument);
}

int sy_ioctl_int(int fd, unsigned long request, unsigned long argument) {
    return ioctl(fd, request, argument);
}

unsigned long sy_kvm_get_api_version(void) { return KVM_GET_API_VERSION; }
unsigned long sy_kvm_create_vm(void) { return KVM_CREATE_VM; }
unsigned long sy_kvm_check_extension(void) { return KVM_CHECK_EXTENSION; }
unsigned long sy_kvm_get_vcpu_mmap_size(void) { return KVM_GET_VCPU_MMAP_SIZE; }
unsigned long sy_vfio_get_api_version(void) { return VFIO_GET_API_VERSION; }
unsigned long sy_vfio_check_extension(void) { return VFIO_CHECK_EXTENSION; }

void sy_strerror(int error, char *buffer, size_t size) {
    if (size == 0) return;
    /* GNU strerror_r may return a static string instead of filling the buffer. */
    const char *text = strerror_r(error, buffer, size);
    if (text != buffer) snprintf(buffer, size, "%s", text);
}

int sy_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }

int sy_accept4(int fd, int flags) { return accept4(fd, NULL, NULL, flags); }
