#!/usr/bin/env bash
# `make run`: the built-in default machine (q35, a PCI-PCI bridge with two test endpoints, one
# on bus 0, and an empty PCIe root port rp1) first as Switchyard's firmware enumerates it, then
# with a real Linux guest: its own lspci -tvnn, a hot-plug into rp1 and two unplugs, timed.
# Where the guest runs is measured, not guessed: `switchyard kvm-probe` times a 64-bit loop on
# this host's /dev/kvm. If it runs at a usable speed, Switchyard boots the guest right here;
# otherwise (this development host: ~1.5 s for what takes ~65 ms nested) the guest boots one
# level down in the nested rig (Tests/Rig: L1 under QEMU TCG, whose KVM can run it).
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
bash Tests/Rig/setup.sh
# One static build serves both paths (the rig copies it into L1 with the libraries ldd lists).
# (The static Foundation's link warning about mktemp is not ours; it is filtered.)
$SWIFT build -c release --static-swift-stdlib ${SWIFT_FLAGS:-} 2>&1 | { grep -v -e "use of \`mktemp' is dangerous" || true; } >&2
BIN=.build/release/switchyard

echo "== Switchyard's model of the default machine after firmware enumeration (no vCPU)"
"$BIN" run

probe_rc=0
probe=$("$BIN" kvm-probe) || probe_rc=$?
echo "$probe"
if [ $probe_rc = 0 ]; then
  echo "== the guest boots here, on this host's KVM"
  images=$(Tests/Rig/build-initramfs.sh)
  # The uncompressed vmlinux boots through PVH: no decompression.
  exec "$BIN" run --kernel "$images/vmlinux" --initrd "$images/l2-initrd.gz"
fi
echo "== this host's KVM cannot boot it: the guest boots one level down, in the nested rig"
echo "   (Tests/Rig: L1 is Linux under QEMU TCG with kvm-amd; Switchyard runs in L1 and boots L2)"
# The scenario's own lines, without the rig's host-time stamps.
set +o pipefail
Tests/Rig/run.sh --switchyard "$BIN" switchyard-run |
  sed -u -n '/==== RIG-BEGIN/,/==== RIG-END/{ s/^ *[0-9]*\.[0-9][0-9] //; /^====/d; /^RIG-TIME/d; p; }'
exit "${PIPESTATUS[0]}"
