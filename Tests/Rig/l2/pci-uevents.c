/* The rig's L2 agent waits on this instead of polling sysfs: one line per PCI uevent the kernel
 * broadcasts ("add /devices/pci0000:00/0000:00:02.0/0000:01:00.0"), flushed at once, so a device
 * arriving or leaving wakes the agent within the time the kernel takes to send the event.
 * Built static by build-initramfs.sh (the L2 image has no libc). Exits when stdout goes away. */
#include <linux/netlink.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
    if (fd < 0) { perror("pci-uevents: socket"); return 1; }
    struct sockaddr_nl addr = { .nl_family = AF_NETLINK, .nl_groups = 1 /* kernel broadcasts */ };
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("pci-uevents: bind"); return 1; }
    /* A message is "ACTION@DEVPATH\0KEY=VALUE\0...", at most a page or so. */
    static char buf[16384];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n <= 0) continue;
        buf[n] = 0;
        const char *action = NULL, *devpath = NULL;
        int pci = 0;
        for (char *p = buf + strlen(buf) + 1; p < buf + n; p += strlen(p) + 1) {
            if (strncmp(p, "ACTION=", 7) == 0) action = p + 7;
            else if (strncmp(p, "DEVPATH=", 8) == 0) devpath = p + 8;
            else if (strcmp(p, "SUBSYSTEM=pci") == 0) pci = 1;
        }
        if (!pci || !action || !devpath) continue;
        if (printf("%s %s\n", action, devpath) < 0 || fflush(stdout) != 0) return 0;
    }
}
