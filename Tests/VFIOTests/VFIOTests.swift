// Tests of the VFIO module.
