# Shared by the rig's host-side scripts.

# The newest Debian 6.1 kernel on disk that has its modules (RIG_KERNEL_VERSION overrides).
rig_kernel_version() {
  if [ -n "${RIG_KERNEL_VERSION:-}" ]; then echo "$RIG_KERNEL_VERSION"; return; fi
  local k v best=""
  for k in /boot/vmlinuz-6.1.*-amd64; do
    [ -e "$k" ] || continue
    v=${k#/boot/vmlinuz-}
    [ -d "/lib/modules/$v" ] && best=$(printf '%s\n%s\n' "$best" "$v" | sort -V | tail -n1)
  done
  [ -n "$best" ] || { echo "no /boot/vmlinuz-6.1.*-amd64 with modules; run Tests/Rig/setup.sh" >&2; return 1; }
  echo "$best"
}
