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
#include <linux/if_tun.h>
#include <linux/if_packet.h>

/// ioctl with a pointer argument; returns -1 and sets errno on failure.
int sy_ioctl_ptr(int fd, unsigned long request, void *argument);
/// ioctl with an integer argument (or none).
int sy_ioctl_int(int fd, unsigned long request, unsigned long argument);

/// Request codes that are macros in the headers, exported as values.
unsigned long sy_kvm_get_api_version(void);
unsigned long sy_kvm_create_vm(void);
unsigned long sy_kvm_check_extension(void);
unsigned long sy_kvm_get_vcpu_mmap_size(void);
unsigned long sy_kvm_get_supported_cpuid(void);
unsigned long sy_kvm_create_vcpu(void);
unsigned long sy_kvm_set_tss_addr(void);
unsigned long sy_kvm_set_identity_map_addr(void);
unsigned long sy_kvm_set_user_memory_region(void);
unsigned long sy_kvm_create_irqchip(void);
unsigned long sy_kvm_enable_cap(void);
unsigned long sy_kvm_create_pit2(void);
unsigned long sy_kvm_set_gsi_routing(void);
unsigned long sy_kvm_irqfd(void);
unsigned long sy_kvm_ioeventfd(void);
unsigned long sy_kvm_signal_msi(void);
unsigned long sy_kvm_irq_line(void);
unsigned long sy_kvm_run(void);
unsigned long sy_kvm_get_regs(void);
unsigned long sy_kvm_set_regs(void);
unsigned long sy_kvm_get_sregs(void);
unsigned long sy_kvm_set_sregs(void);
unsigned long sy_kvm_set_cpuid2(void);
unsigned long sy_kvm_get_msrs(void);
unsigned long sy_kvm_set_msrs(void);
unsigned long sy_kvm_get_fpu(void);
unsigned long sy_kvm_set_fpu(void);
unsigned long sy_kvm_get_lapic(void);
unsigned long sy_kvm_set_lapic(void);
unsigned long sy_kvm_get_mp_state(void);
unsigned long sy_kvm_set_mp_state(void);
unsigned long sy_kvm_get_vcpu_events(void);
unsigned long sy_kvm_set_vcpu_events(void);
unsigned long sy_kvm_get_irqchip(void);
unsigned long sy_kvm_set_irqchip(void);
unsigned long sy_kvm_get_pit2(void);
unsigned long sy_kvm_set_pit2(void);
unsigned long sy_vfio_get_api_version(void);
unsigned long sy_vfio_check_extension(void);
unsigned long sy_vfio_set_iommu(void);
unsigned long sy_vfio_group_get_status(void);
unsigned long sy_vfio_group_set_container(void);
unsigned long sy_vfio_group_unset_container(void);
unsigned long sy_vfio_group_get_device_fd(void);
unsigned long sy_vfio_device_get_info(void);
unsigned long sy_vfio_device_get_region_info(void);
unsigned long sy_vfio_device_get_irq_info(void);
unsigned long sy_vfio_device_set_irqs(void);
unsigned long sy_vfio_device_reset(void);
unsigned long sy_vfio_device_get_pci_hot_reset_info(void);
unsigned long sy_vfio_device_pci_hot_reset(void);
unsigned long sy_vfio_iommu_get_info(void);
unsigned long sy_vfio_iommu_map_dma(void);
unsigned long sy_vfio_iommu_unmap_dma(void);
/// iommufd (/dev/iommu) and the VFIO device cdev's bind and attach (Linux 6.6).
unsigned long sy_iommu_ioas_alloc(void);
unsigned long sy_iommu_ioas_iova_ranges(void);
unsigned long sy_iommu_ioas_map(void);
unsigned long sy_iommu_ioas_unmap(void);
unsigned long sy_vfio_device_bind_iommufd(void);
unsigned long sy_vfio_device_attach_iommufd_pt(void);
/// memfd_create(2) (declared by glibc only under _GNU_SOURCE), close-on-exec.
int sy_memfd_create(const char *name);

/// Byte offsets and sizes of the KVM structures Swift reads as raw bytes: struct kvm_run's
/// exit union (anonymous unions do not import well) and the headers and entry strides of the
/// structures that end in a flexible array.
struct sy_kvm_layout {
    unsigned long run_size;
    unsigned long exit_reason;
    unsigned long immediate_exit;
    unsigned long io_direction, io_size, io_port, io_count, io_data_offset;
    unsigned long mmio_phys_addr, mmio_data, mmio_len, mmio_is_write;
    unsigned long system_event_type, system_event_ndata, system_event_data;
    unsigned long internal_suberror, internal_ndata, internal_data, internal_data_count;
    unsigned long fail_entry_reason, fail_entry_cpu;
    unsigned long hw_exit_reason;
    unsigned long eoi_vector;
    unsigned long cpuid2_header, cpuid_entry2_size;
    unsigned long msrs_header, msr_entry_size;
    unsigned long irq_routing_header, irq_routing_entry_size;
};
struct sy_kvm_layout sy_kvm_layout(void);

/// Fills a GSI routing entry that routes `gsi` to `pin` of irqchip `chip` (0/1 PIC, 2 IOAPIC).
void sy_kvm_routing_irqchip(struct kvm_irq_routing_entry *entry, uint32_t gsi,
                            uint32_t chip, uint32_t pin);
/// Fills a GSI routing entry that turns `gsi` into an MSI write.
void sy_kvm_routing_msi(struct kvm_irq_routing_entry *entry, uint32_t gsi,
                        uint64_t address, uint32_t data);

/// A release store of one byte that another thread (or the kernel) reads, e.g.
/// kvm_run.immediate_exit.
void sy_atomic_store_u8(uint8_t *address, uint8_t value);
uint32_t sy_atomic_load_u32(const uint32_t *address);
void sy_atomic_store_u32(uint32_t *address, uint32_t value);

/* KVM's coalesced MMIO/PIO ring (struct kvm_coalesced_mmio_ring), offsets from the header. */
unsigned long sy_kvm_register_coalesced_mmio(void);
struct sy_kvm_coalesced_layout {
    size_t ring_first, ring_last, ring_entries;
    size_t entry_size, entry_address, entry_length, entry_pio, entry_data, entry_data_size;
};
struct sy_kvm_coalesced_layout sy_kvm_coalesced_layout(void);
void sy_kvm_coalesced_zone(struct kvm_coalesced_mmio_zone *zone, uint64_t address, uint32_t size, int pio);

/// strerror into a caller's buffer (thread-safe), always NUL-terminated.
void sy_strerror(int error, char *buffer, size_t size);
/// pipe2(2) (declared by glibc only under _GNU_SOURCE).
int sy_pipe2(int fds[2], int flags);
/// pthread_setname_np for the calling thread (glibc declares it only under _GNU_SOURCE).
int sy_set_thread_name(const char *name);
/// tgkill(2) (syscall(2) is variadic): 0, or -1 with errno set.
int sy_tgkill(int tgid, int tid, int signal);
/// The calling thread's id (gettid(2)).
int sy_gettid(void);
/// Puts the calling thread under SCHED_BATCH (its wake-up does not preempt the running thread): 0 or -errno.
int sy_sched_batch_self(void);
/// SCHED_BATCH (a _GNU_SOURCE macro Swift does not see).
int sy_sched_batch_policy(void);
/// accept4(2) without the peer address (declared by glibc only under _GNU_SOURCE).
int sy_accept4(int fd, int flags);

/// NVMe admin commands from user space (HostDevices: SR-IOV virtualization management).
#include <linux/nvme_ioctl.h>
unsigned long sy_nvme_ioctl_admin_cmd(void);

/* tap and macvtap queues (net/tap-linux.c's ioctls). struct ifreq lives in the shim, since
   <net/if.h> and <linux/if.h> cannot both be imported. */
unsigned long sy_tun_set_vnet_header_size(void);
unsigned long sy_tun_get_vnet_header_size(void);
unsigned long sy_tun_set_offload(void);
unsigned long sy_tun_get_features(void);
/// TUNSETIFF with `name` (may be empty: the kernel picks tapN) and `flags`; on success writes
/// the interface's name (IFNAMSIZ bytes) to `name_out`.
int sy_tun_set_iff(int fd, const char *name, short flags, char *name_out);
/// TUNGETIFF: the interface's name (IFNAMSIZ bytes) and the queue's flags.
int sy_tun_get_iff(int fd, char *name_out, short *flags_out);
/// TUNSETQUEUE with IFF_ATTACH_QUEUE or IFF_DETACH_QUEUE: a multi-queue tap's (or macvtap's)
/// queue joins or leaves the set the kernel steers frames to.
int sy_tun_set_queue(int fd, short flags);
/// TUNSETQUEUE's request number (for the sandbox lists).
unsigned long sy_tun_set_queue_request(void);
/// The interface name size (IFNAMSIZ, 16 with the terminating NUL).
unsigned long sy_ifnamsiz(void);
/// setns(2) (declared by glibc only under _GNU_SOURCE): moves the calling thread.
int sy_setns(int fd, int nstype);
/// CLONE_NEWNET, for sy_setns.
int sy_clone_newnet(void);

/* vhost-net (drivers/vhost/net.c): the kernel moves a virtio-net device's packets. */
#include <linux/vhost.h>
unsigned long sy_vhost_get_features(void);
unsigned long sy_vhost_set_features(void);
unsigned long sy_vhost_set_owner(void);
unsigned long sy_vhost_set_mem_table(void);
unsigned long sy_vhost_set_vring_num(void);
unsigned long sy_vhost_set_vring_base(void);
unsigned long sy_vhost_get_vring_base(void);
unsigned long sy_vhost_set_vring_addr(void);
unsigned long sy_vhost_set_vring_kick(void);
unsigned long sy_vhost_set_vring_call(void);
unsigned long sy_vhost_net_set_backend(void);

/* Landlock (Documentation/userspace-api/landlock.rst): a thread confines which files it can
   open. Each returns the result or -errno. */
/// The ABI version (1 and up), or -ENOSYS (not built) / -EOPNOTSUPP (disabled at boot).
int sy_landlock_abi(void);
/// A ruleset handling every file-system right of ABI versions 1-3 that `abi` knows.
int sy_landlock_ruleset(int abi);
/// Allows `access` (LANDLOCK_ACCESS_FS_* bits, those `abi` handles) on `path` and, for a
/// directory, beneath it; a regular file takes only the file rights of `access`.
int sy_landlock_allow(int ruleset, int abi, const char *path, unsigned long long access);
/// Confines the calling thread (and the threads it starts) to `ruleset`. Needs no_new_privs
/// (which the seccomp filters set on every thread) or CAP_SYS_ADMIN.
int sy_landlock_restrict_self(int ruleset);
unsigned long long sy_landlock_read_file(void);
unsigned long long sy_landlock_write_file(void);
unsigned long long sy_landlock_remove_file(void);
unsigned long long sy_landlock_read_dir(void);

#endif
