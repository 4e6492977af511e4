// libnl-route-3 (Debian's libnl-route-3-dev): rtnetlink links, macvtap and SR-IOV VF settings.
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/link/macvtap.h>
#include <netlink/route/link/macvlan.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/sriov.h>
