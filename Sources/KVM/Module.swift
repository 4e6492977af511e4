// KVM: VM, vCPU, irqchip, irqfd, ioeventfd (see ARCHITECTURE.md)
