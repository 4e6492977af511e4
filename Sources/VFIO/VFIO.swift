// VFIO device assignment's kernel seam (issue 13): container, group and device ioctls behind one
// narrow protocol, the real implementation over /dev/vfio, and a recording twin for unit tests.
