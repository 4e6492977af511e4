// Linux UAPI headers for Swift, plus shims for what Swift cannot import directly:
// ioctl is variadic and the _IO* request codes are function-like macros.
#ifndef SWITCHYARD_CLINUX_H
#define SWITCHYARD_CLINUX_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/epoll.h>
#include <linux/kvm.h>
#include <linux/vfio.h>

/// ioctl with a pointer argument; returns -1 and sets errno on failure.
int sy_ioctl_ptr(int fd, unsigned long request, void *argument);
/// ioctl with an integer argument (or none).
int sy_ioctl_int(int fd, unsigned long request, unsigned long argument);

/// Request codes that are macros in the headers, exported as values.
unsigned long sy_kvm_get_api_version(void);
unsigned long sy_kvm_create_vm(void);
unsigned long sy_kvm_check_extension(void);
unsigned long sy_kvm_get_vcpu_mmap_size(void);
unsigned long sy_vfio_get_api_version(void);
unsigned long sy_vfio_check_extension(void);

/// strerror into a caller's buffer (thread-safe), always NUL-terminated.
void sy_strerror(int error, char *buffer, size_t size);
/// pipe2(2) (declared by glibc only under _GNU_SOURCE).
int sy_pipe2(int fds[2], int flags);
/// accept4(2) without the peer address (declared by glibc only under _GNU_SOURCE).
int sy_accept4(int fd, int flags);

#endif
