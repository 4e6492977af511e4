// virtio 1.x over PCI (issue 14): the modern transport and split virtqueues.
