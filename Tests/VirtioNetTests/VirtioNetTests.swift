// Tests of the VirtioNet module.
