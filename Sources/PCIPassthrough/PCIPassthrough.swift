// A host PCI function assigned to the guest (issue 13): config space virtualized over VFIO.
