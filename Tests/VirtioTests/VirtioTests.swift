// Tests of the Virtio module.
