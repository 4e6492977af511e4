// Tests of the PCIPassthrough module.
