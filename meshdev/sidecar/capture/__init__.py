"""Traffic capture, as Istio does it: the pod's iptables redirect every TCP connection of the
app to its sidecar, which finds where it was going (SO_ORIGINAL_DST) and serves it as the
listener of that destination, or relays it there unchanged.

- iptables: the rules (pure) and `apply`, run once per pod by a root init step before its app
  starts (`meshdev capture-init`);
- original_dst: reading a redirected connection's original destination, and handing the
  connection to whoever serves it;
- passthrough: Istio's PassthroughCluster, for destinations that are not mesh services;
- hosts: the pod's /etc/hosts naming every service's virtual address.
"""
