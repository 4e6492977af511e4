#define _GNU_SOURCE
#include <pthread.h>
#include "CLinux.h"
#include <stddef.h>
#include <string.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sched.h>
#include <net/if.h>

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
unsigned long sy_kvm_get_supported_cpuid(void) { return KVM_GET_SUPPORTED_CPUID; }
unsigned long sy_kvm_create_vcpu(void) { return KVM_CREATE_VCPU; }
unsigned long sy_kvm_set_tss_addr(void) { return KVM_SET_TSS_ADDR; }
unsigned long sy_kvm_set_identity_map_addr(void) { return KVM_SET_IDENTITY_MAP_ADDR; }
unsigned long sy_kvm_set_user_memory_region(void) { return KVM_SET_USER_MEMORY_REGION; }
unsigned long sy_kvm_create_irqchip(void) { return KVM_CREATE_IRQCHIP; }
unsigned long sy_kvm_enable_cap(void) { return KVM_ENABLE_CAP; }
unsigned long sy_kvm_create_pit2(void) { return KVM_CREATE_PIT2; }
unsigned long sy_kvm_set_gsi_routing(void) { return KVM_SET_GSI_ROUTING; }
unsigned long sy_kvm_irqfd(void) { return KVM_IRQFD; }
unsigned long sy_kvm_ioeventfd(void) { return KVM_IOEVENTFD; }
unsigned long sy_kvm_signal_msi(void) { return KVM_SIGNAL_MSI; }
unsigned long sy_kvm_irq_line(void) { return KVM_IRQ_LINE; }
unsigned long sy_kvm_run(void) { return KVM_RUN; }
unsigned long sy_kvm_get_regs(void) { return KVM_GET_REGS; }
unsigned long sy_kvm_set_regs(void) { return KVM_SET_REGS; }
unsigned long sy_kvm_get_sregs(void) { return KVM_GET_SREGS; }
unsigned long sy_kvm_set_sregs(void) { return KVM_SET_SREGS; }
unsigned long sy_kvm_set_cpuid2(void) { return KVM_SET_CPUID2; }
unsigned long sy_kvm_get_msrs(void) { return KVM_GET_MSRS; }
unsigned long sy_kvm_set_msrs(void) { return KVM_SET_MSRS; }
unsigned long sy_kvm_get_fpu(void) { return KVM_GET_FPU; }
unsigned long sy_kvm_set_fpu(void) { return KVM_SET_FPU; }
unsigned long sy_kvm_get_lapic(void) { return KVM_GET_LAPIC; }
unsigned long sy_kvm_set_lapic(void) { return KVM_SET_LAPIC; }
unsigned long sy_kvm_get_mp_state(void) { return KVM_GET_MP_STATE; }
unsigned long sy_kvm_set_mp_state(void) { return KVM_SET_MP_STATE; }
unsigned long sy_kvm_get_vcpu_events(void) { return KVM_GET_VCPU_EVENTS; }
unsigned long sy_kvm_set_vcpu_events(void) { return KVM_SET_VCPU_EVENTS; }
unsigned long sy_kvm_get_irqchip(void) { return KVM_GET_IRQCHIP; }
unsigned long sy_kvm_set_irqchip(void) { return KVM_SET_IRQCHIP; }
unsigned long sy_kvm_get_pit2(void) { return KVM_GET_PIT2; }
unsigned long sy_kvm_set_pit2(void) { return KVM_SET_PIT2; }
unsigned long sy_vfio_get_api_version(void) { return VFIO_GET_API_VERSION; }
unsigned long sy_vfio_check_extension(void) { return VFIO_CHECK_EXTENSION; }
unsigned long sy_vfio_set_iommu(void) { return VFIO_SET_IOMMU; }
unsigned long sy_vfio_group_get_status(void) { return VFIO_GROUP_GET_STATUS; }
unsigned long sy_vfio_group_set_container(void) { return VFIO_GROUP_SET_CONTAINER; }
unsigned long sy_vfio_group_unset_container(void) { return VFIO_GROUP_UNSET_CONTAINER; }
unsigned long sy_vfio_group_get_device_fd(void) { return VFIO_GROUP_GET_DEVICE_FD; }
unsigned long sy_vfio_device_get_info(void) { return VFIO_DEVICE_GET_INFO; }
unsigned long sy_vfio_device_get_region_info(void) { return VFIO_DEVICE_GET_REGION_INFO; }
unsigned long sy_vfio_device_get_irq_info(void) { return VFIO_DEVICE_GET_IRQ_INFO; }
unsigned long sy_vfio_device_set_irqs(void) { return VFIO_DEVICE_SET_IRQS; }
unsigned long sy_vfio_device_reset(void) { return VFIO_DEVICE_RESET; }
unsigned long sy_vfio_device_get_pci_hot_reset_info(void) { return VFIO_DEVICE_GET_PCI_HOT_RESET_INFO; }
unsigned long sy_vfio_device_pci_hot_reset(void) { return VFIO_DEVICE_PCI_HOT_RESET; }
unsigned long sy_vfio_iommu_get_info(void) { return VFIO_IOMMU_GET_INFO; }
unsigned long sy_vfio_iommu_map_dma(void) { return VFIO_IOMMU_MAP_DMA; }
unsigned long sy_vfio_iommu_unmap_dma(void) { return VFIO_IOMMU_UNMAP_DMA; }
/* iommufd and VFIO's device cdev (Linux 6.6) are newer than Debian 12's headers: the numbers are
 * <linux/iommufd.h>'s and <linux/vfio.h>'s, all _IO(';', nr) (the size lives in the struct). */
#define SY_IOMMUFD_TYPE ';'
unsigned long sy_iommu_ioas_alloc(void) { return _IO(SY_IOMMUFD_TYPE, 0x81); }
unsigned long sy_iommu_ioas_iova_ranges(void) { return _IO(SY_IOMMUFD_TYPE, 0x84); }
unsigned long sy_iommu_ioas_map(void) { return _IO(SY_IOMMUFD_TYPE, 0x85); }
unsigned long sy_iommu_ioas_unmap(void) { return _IO(SY_IOMMUFD_TYPE, 0x86); }
unsigned long sy_vfio_device_bind_iommufd(void) { return _IO(VFIO_TYPE, VFIO_BASE + 18); }
unsigned long sy_vfio_device_attach_iommufd_pt(void) { return _IO(VFIO_TYPE, VFIO_BASE + 19); }
int sy_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

#define SY_OFFSET(field) ((unsigned long)offsetof(struct kvm_run, field))

struct sy_kvm_layout sy_kvm_layout(void) {
    struct sy_kvm_layout l = {
        .run_size = sizeof(struct kvm_run),
        .exit_reason = SY_OFFSET(exit_reason),
        .immediate_exit = SY_OFFSET(immediate_exit),
        .io_direction = SY_OFFSET(io.direction),
        .io_size = SY_OFFSET(io.size),
        .io_port = SY_OFFSET(io.port),
        .io_count = SY_OFFSET(io.count),
        .io_data_offset = SY_OFFSET(io.data_offset),
        .mmio_phys_addr = SY_OFFSET(mmio.phys_addr),
        .mmio_data = SY_OFFSET(mmio.data),
        .mmio_len = SY_OFFSET(mmio.len),
        .mmio_is_write = SY_OFFSET(mmio.is_write),
        .system_event_type = SY_OFFSET(system_event.type),
        .system_event_ndata = SY_OFFSET(system_event.ndata),
        .system_event_data = SY_OFFSET(system_event.data),
        .internal_suberror = SY_OFFSET(internal.suberror),
        .internal_ndata = SY_OFFSET(internal.ndata),
        .internal_data = SY_OFFSET(internal.data),
        .internal_data_count = sizeof(((struct kvm_run *)0)->internal.data) / sizeof(__u64),
        .fail_entry_reason = SY_OFFSET(fail_entry.hardware_entry_failure_reason),
        .fail_entry_cpu = SY_OFFSET(fail_entry.cpu),
        .hw_exit_reason = SY_OFFSET(hw.hardware_exit_reason),
        .eoi_vector = SY_OFFSET(eoi.vector),
        .cpuid2_header = offsetof(struct kvm_cpuid2, entries),
        .cpuid_entry2_size = sizeof(struct kvm_cpuid_entry2),
        .msrs_header = offsetof(struct kvm_msrs, entries),
        .msr_entry_size = sizeof(struct kvm_msr_entry),
        .irq_routing_header = offsetof(struct kvm_irq_routing, entries),
        .irq_routing_entry_size = sizeof(struct kvm_irq_routing_entry),
    };
    return l;
}

void sy_kvm_routing_irqchip(struct kvm_irq_routing_entry *entry, uint32_t gsi,
                            uint32_t chip, uint32_t pin) {
    memset(entry, 0, sizeof *entry);
    entry->gsi = gsi;
    entry->type = KVM_IRQ_ROUTING_IRQCHIP;
    entry->u.irqchip.irqchip = chip;
    entry->u.irqchip.pin = pin;
}

void sy_kvm_routing_msi(struct kvm_irq_routing_entry *entry, uint32_t gsi,
                        uint64_t address, uint32_t data) {
    memset(entry, 0, sizeof *entry);
    entry->gsi = gsi;
    entry->type = KVM_IRQ_ROUTING_MSI;
    entry->u.msi.address_lo = (uint32_t)address;
    entry->u.msi.address_hi = (uint32_t)(address >> 32);
    entry->u.msi.data = data;
}

void sy_atomic_store_u8(uint8_t *address, uint8_t value) {
    __atomic_store_n(address, value, __ATOMIC_RELEASE);
}

uint32_t sy_atomic_load_u32(const uint32_t *address) {
    return __atomic_load_n(address, __ATOMIC_ACQUIRE);
}

void sy_atomic_store_u32(uint32_t *address, uint32_t value) {
    __atomic_store_n(address, value, __ATOMIC_RELEASE);
}

unsigned long sy_kvm_register_coalesced_mmio(void) { return KVM_REGISTER_COALESCED_MMIO; }

struct sy_kvm_coalesced_layout sy_kvm_coalesced_layout(void) {
    struct sy_kvm_coalesced_layout l = {
        .ring_first = offsetof(struct kvm_coalesced_mmio_ring, first),
        .ring_last = offsetof(struct kvm_coalesced_mmio_ring, last),
        .ring_entries = offsetof(struct kvm_coalesced_mmio_ring, coalesced_mmio),
        .entry_size = sizeof(struct kvm_coalesced_mmio),
        .entry_address = offsetof(struct kvm_coalesced_mmio, phys_addr),
        .entry_length = offsetof(struct kvm_coalesced_mmio, len),
        .entry_pio = offsetof(struct kvm_coalesced_mmio, pio),
        .entry_data = offsetof(struct kvm_coalesced_mmio, data),
        .entry_data_size = sizeof(((struct kvm_coalesced_mmio *)0)->data),
    };
    return l;
}

void sy_kvm_coalesced_zone(struct kvm_coalesced_mmio_zone *zone, uint64_t address, uint32_t size, int pio) {
    memset(zone, 0, sizeof *zone);
    zone->addr = address;
    zone->size = size;
    zone->pio = pio ? 1 : 0;
}

void sy_strerror(int error, char *buffer, size_t size) {
    if (size == 0) return;
    /* GNU strerror_r may return a static string instead of filling the buffer. */
    const char *text = strerror_r(error, buffer, size);
    if (text != buffer) snprintf(buffer, size, "%s", text);
}

int sy_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }

int sy_accept4(int fd, int flags) { return accept4(fd, NULL, NULL, flags); }

int sy_set_thread_name(const char *name) { return pthread_setname_np(pthread_self(), name); }

unsigned long sy_nvme_ioctl_admin_cmd(void) { return NVME_IOCTL_ADMIN_CMD; }

unsigned long sy_tun_set_vnet_header_size(void) { return TUNSETVNETHDRSZ; }
unsigned long sy_tun_get_vnet_header_size(void) { return TUNGETVNETHDRSZ; }
unsigned long sy_tun_set_offload(void) { return TUNSETOFFLOAD; }
unsigned long sy_tun_get_features(void) { return TUNGETFEATURES; }

int sy_tun_set_iff(int fd, const char *name, short flags, char *name_out) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    snprintf(request.ifr_name, IFNAMSIZ, "%s", name);
    request.ifr_flags = flags;
    int rc = ioctl(fd, TUNSETIFF, &request);
    if (rc == 0) memcpy(name_out, request.ifr_name, IFNAMSIZ);
    return rc;
}

int sy_tun_get_iff(int fd, char *name_out, short *flags_out) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    int rc = ioctl(fd, TUNGETIFF, &request);
    if (rc == 0) {
        memcpy(name_out, request.ifr_name, IFNAMSIZ);
        *flags_out = request.ifr_flags;
    }
    return rc;
}

int sy_tun_set_queue(int fd, short flags) {
    struct ifreq request;
    memset(&request, 0, sizeof request);
    request.ifr_flags = flags;
    return ioctl(fd, TUNSETQUEUE, &request);
}

unsigned long sy_tun_set_queue_request(void) { return TUNSETQUEUE; }

unsigned long sy_ifnamsiz(void) { return IFNAMSIZ; }

int sy_setns(int fd, int nstype) { return setns(fd, nstype); }

int sy_clone_newnet(void) { return CLONE_NEWNET; }

unsigned long sy_vhost_get_features(void) { return VHOST_GET_FEATURES; }
unsigned long sy_vhost_set_features(void) { return VHOST_SET_FEATURES; }
unsigned long sy_vhost_set_owner(void) { return VHOST_SET_OWNER; }
unsigned long sy_vhost_set_mem_table(void) { return VHOST_SET_MEM_TABLE; }
unsigned long sy_vhost_set_vring_num(void) { return VHOST_SET_VRING_NUM; }
unsigned long sy_vhost_set_vring_base(void) { return VHOST_SET_VRING_BASE; }
unsigned long sy_vhost_get_vring_base(void) { return VHOST_GET_VRING_BASE; }
unsigned long sy_vhost_set_vring_addr(void) { return VHOST_SET_VRING_ADDR; }
unsigned long sy_vhost_set_vring_kick(void) { return VHOST_SET_VRING_KICK; }
unsigned long sy_vhost_set_vring_call(void) { return VHOST_SET_VRING_CALL; }
unsigned long sy_vhost_net_set_backend(void) { return VHOST_NET_SET_BACKEND; }

#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <sys/stat.h>
#include <sys/syscall.h>

int sy_tgkill(int tgid, int tid, int signal) { return (int)syscall(SYS_tgkill, tgid, tid, signal); }
int sy_gettid(void) { return (int)syscall(SYS_gettid); }
int sy_sched_batch_policy(void) { return SCHED_BATCH; }
int sy_sched_batch_self(void) {
    struct sched_param none = { .sched_priority = 0 };
    return sched_setscheduler(0, SCHED_BATCH, &none) == 0 ? 0 : -errno;
}

#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif

int sy_landlock_abi(void) {
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return abi < 0 ? -errno : (int)abi;
}

/* The rights each ABI version added: v1 the first 13, v2 REFER, v3 TRUNCATE. Later ones
   (ioctl on devices, network, scopes) are left unhandled: those stay as seccomp has them. */
static unsigned long long handled_rights(int abi) {
    unsigned long long rights = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;
    if (abi >= 2) rights |= LANDLOCK_ACCESS_FS_REFER;
    if (abi >= 3) rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
    return rights;
}

int sy_landlock_ruleset(int abi) {
    struct landlock_ruleset_attr attr = { .handled_access_fs = handled_rights(abi) };
    long fd = syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
    return fd < 0 ? -errno : (int)fd;
}

int sy_landlock_allow(int ruleset, int abi, const char *path, unsigned long long access) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0) { int e = errno; close(fd); return -e; }
    if (!S_ISDIR(st.st_mode)) {
        access &= LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE
                  | LANDLOCK_ACCESS_FS_TRUNCATE;
    }
    struct landlock_path_beneath_attr rule = {
        .allowed_access = access & handled_rights(abi), .parent_fd = fd };
    long rc = syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0);
    int e = errno;
    close(fd);
    return rc < 0 ? -e : 0;
}

int sy_landlock_restrict_self(int ruleset) {
    long rc = syscall(SYS_landlock_restrict_self, ruleset, 0);
    return rc < 0 ? -errno : 0;
}

unsigned long long sy_landlock_read_file(void) { return LANDLOCK_ACCESS_FS_READ_FILE; }
unsigned long long sy_landlock_write_file(void) { return LANDLOCK_ACCESS_FS_WRITE_FILE; }
unsigned long long sy_landlock_remove_file(void) { return LANDLOCK_ACCESS_FS_REMOVE_FILE; }
unsigned long long sy_landlock_read_dir(void) { return LANDLOCK_ACCESS_FS_READ_DIR; }
