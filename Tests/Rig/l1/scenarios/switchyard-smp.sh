#!/bin/sh
# switchyard-smp: switchyard-boot with two vCPUs in L2, under QEMU and under Switchyard (one
# thread per vCPU; the APs start through INIT/SIPI on the in-kernel LAPIC); the checks include
# L2's online CPUs (0-1).
RIG_L2_SMP=2 exec /rig/scenarios/switchyard-boot.sh
