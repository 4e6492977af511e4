// The virtio-net device (issue 14) over a HostNetwork backend.
