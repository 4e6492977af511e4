// Tests of the HostNetwork module.
