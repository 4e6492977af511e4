// Host network backends (issue 14): tap and macvtap queues, macvtap links and SR-IOV VFs (libnl).
