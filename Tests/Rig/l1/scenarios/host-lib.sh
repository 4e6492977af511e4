# Helpers of the host-tools scenarios (sourced; not a scenario: no .l0, never in run.sh's list).
fails=0
check() { # DESCRIPTION COMMAND...
  _what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "ok: $_what"; else echo "CHECK FAILED: $_what"; fails=$((fails + 1)); fi
}
# pci_by_id VENDOR:DEVICE: the first sysfs PCI address with that ID.
pci_by_id() {
  for _d in /sys/bus/pci/devices/*; do
    [ "$(cat $_d/vendor):$(cat $_d/device)" = "0x${1%:*}:0x${1#*:}" ] && { basename $_d; return 0; }
  done
  return 1
}
driver_of() { [ -e /sys/bus/pci/devices/$1/driver ] && basename "$(readlink /sys/bus/pci/devices/$1/driver)"; }
group_of() { basename "$(readlink /sys/bus/pci/devices/$1/iommu_group)"; }
# vfio_backend PID: the VFIO interface process PID holds, from its open files: iommufd
# (/dev/iommu and a device cdev /dev/vfio/devices/vfioN), container (/dev/vfio/vfio) or none.
vfio_backend() {
  _fds=$(ls -l /proc/$1/fd 2>/dev/null)
  if echo "$_fds" | grep -q ' -> /dev/iommu$' && echo "$_fds" | grep -q ' -> /dev/vfio/devices/vfio[0-9]*$'; then echo iommufd
  elif echo "$_fds" | grep -q ' -> /dev/vfio/vfio$'; then echo container
  else echo none; fi
}
# The interface this kernel offers a VMM that picks the newest: iommufd where it has /dev/iommu
# and VFIO device cdevs (their "vfio-dev" character major), the container otherwise.
vfio_kernel_backend() {
  if [ -c /dev/iommu ] && sed -n '/^Character/,/^$/p' /proc/devices | grep -q ' vfio-dev$'; then echo iommufd; else echo container; fi
}
# list_has FILE BDF TEXT: TEXT appears in the block host list printed for BDF.
list_has() {
  awk -v bdf="$2" -v want="$3" '
    /^[0-9a-f]{4}:/ { inside = ($1 == bdf) }
    inside && index($0, want) { found = 1 }
    END { exit !found }' "$1"
}
# refused DESCRIPTION TEXT CMD...: CMD fails and says TEXT.
refused() {
  _what=$1 _text=$2; shift 2
  _out=$("$@" 2>&1); _rc=$?
  echo "$ $* -> status $_rc: $_out"
  if [ $_rc != 0 ] && echo "$_out" | grep -qF "$_text"; then echo "ok: refused $_what"
  else echo "CHECK FAILED: $_what: want a refusal saying '$_text'"; fails=$((fails + 1)); fi
}
# timed NAME CMD...: runs CMD, reports its wall time as RIG-TIME NAME.
timed() {
  _name=$1; shift
  _t0=$(now)
  "$@"; _rc=$?
  report_time "$_name" "$(elapsed "$_t0" "$(now)")"
  [ $_rc = 0 ] || { echo "CHECK FAILED: $* exited with $_rc"; fails=$((fails + 1)); }
  return $_rc
}
wait_driver() { # BDF DRIVER: up to 10 s
  _i=0
  while [ "$(driver_of $1)" != "$2" ] && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i + 1)); done
}
wait_path() { # GLOB SECONDS
  _i=0
  while ! ls $1 >/dev/null 2>&1 && [ $_i -lt $(($2 * 10)) ]; do sleep 0.1; _i=$((_i + 1)); done
}
# The JSON lists the same addresses as sysfs (busybox has no JSON parser: count the keys).
json_devices_match() {
  /switchyard host list --json >/tmp/list.json || return 1
  _json=$(grep -o '"address" : "[0-9a-f:.]*"' /tmp/list.json | sed 's/.*: "//; s/"$//' | sort | tr '\n' ' ')
  _sys=$(ls /sys/bus/pci/devices | sort | tr '\n' ' ')
  [ "$_json" = "$_sys" ] || { echo "json: $_json / sysfs: $_sys" >&2; return 1; }
}
# start_peer IF [VLAN]: the peer of virtio-net-vf and vfio-igb: IF (the e1000e on L0's hub) in
# a network namespace of its own (held by the process $peer), at 10.0.2.2/24 on IF or on its
# VLAN interface, serving /tmp/peer/www/rx (4 MiB of random bytes) over HTTP on port 5002.
start_peer() {
  unshare -n sleep 900 </dev/null >/dev/null 2>&1 &
  peer=$!
  mkdir -p /tmp/peer/www
  dd if=/dev/urandom of=/tmp/peer/www/rx bs=64k count=64 2>/dev/null
  ip link set dev "$1" netns $peer
  if [ -n "${2:-}" ]; then
    nsenter -t $peer -n sh -c "
      ip link set lo up; ip link set $1 up; ip link set $1 promisc on
      vconfig add $1 $2 >/dev/null
      ip link set $1.$2 up; ip addr add 10.0.2.2/24 dev $1.$2
      httpd -p 5002 -h /tmp/peer/www"
  else
    nsenter -t $peer -n sh -c "
      ip link set lo up; ip link set $1 up; ip addr add 10.0.2.2/24 dev $1
      httpd -p 5002 -h /tmp/peer/www"
  fi
}

# peer_listen: a fresh listener for one L2 run's 4 MiB (nc takes one connection) into
# /tmp/peer/tx and an echo on port 5003 for its request/response (l2/rr.c), with the peer's
# neighbour table emptied so it shows only this run's L2.
peer_listen() {
  rm -f /tmp/peer/tx
  nsenter -t $peer -n sh -c "ip neigh flush all; sleep 600 | nc -l -p 5001 >/tmp/peer/tx & nc -l -p 5003 -e cat &"
}

# stop_peer: the listeners end, and the namespace with its last process.
stop_peer() {
  killall nc httpd 2>/dev/null
  kill $peer 2>/dev/null
}

# peer_traffic_checks PREFIX LOG: what L2's net checks (l2/init, rig.l2=net) did with the peer of
# virtio-net-vf and vfio-igb, from L2's lines and the peer's own files: it answered pings, 10 of
# 10, the 4 MiB each way have equal checksums on both sides (/tmp/peer/tx received by the
# peer, /tmp/peer/www/rx served by it), and request/response transactions went through.
peer_traffic_checks() {
  check "${1}the peer answered L2's pings" grep -q ' RIG-L2 net link-up ok=1' "$2"
  check "${1}10 of 10 pings" grep -q ' RIG-L2 net ping sent=10 received=10' "$2"
  _tx=$(sed -n 's/.* RIG-L2 net tx bytes=4194304 md5=\([0-9a-f]*\).*/\1/p' "$2")
  check "${1}4 MiB L2 -> peer with equal checksums" [ -n "$_tx" -a "$_tx" = "$(md5sum </tmp/peer/tx | cut -d' ' -f1)" ]
  _rx=$(sed -n 's/.* RIG-L2 net rx bytes=4194304 md5=\([0-9a-f]*\).*/\1/p' "$2")
  check "${1}4 MiB peer -> L2 with equal checksums" [ -n "$_rx" -a "$_rx" = "$(md5sum </tmp/peer/www/rx | cut -d' ' -f1)" ]
  check "${1}request/response with the peer ($(sed -n 's/.* RIG-L2 net rr .*per_s=\([0-9]*\).*/\1/p' "$2" | head -n 1)/s)" \
    grep -q ' RIG-L2 net rr transactions=[1-9]' "$2"
}
