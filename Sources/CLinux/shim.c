#include "CLinux.h"
#include <sys/ioctl.h>

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
