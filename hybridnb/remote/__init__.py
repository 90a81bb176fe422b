"""Remote hosts: a lab host reached only through its engines' URLs (issue 17).

A host given as ``{docker: ssh://lab@b, libvirt: qemu+ssh://lab@b/system}`` is driven from
this machine through its Docker API alone:

* its containers and Docker networks by the ordinary Docker drivers, given the URL
  (``unix://``, ``tcp://`` with TLS, ``ssh://`` go to the docker SDK unchanged);
* its bridge, VXLAN device, firewall rule, nftables table, namespace hosts (their
  namespaces in that host's ``/run/netns``) and link impairments — netlink, tc and nftables
  work that must happen *on that machine* — by hybridnb's own drivers running there in the
  **agent container** (:mod:`hybridnb.remote.agentbox`): not privileged but given
  ``NET_ADMIN``, ``NET_RAW`` and ``SYS_ADMIN``, in the host's network and PID namespaces
  (``network_mode=host``, ``pid_mode=host``), started through that Docker API from the
  **agent image** (:mod:`hybridnb.remote.image`), reached by Docker exec with stdio attached
  (:mod:`hybridnb.drivers.runner`) and spoken to in JSON lines (:mod:`hybridnb.remote.wire`,
  the server :mod:`hybridnb.remote.agent`);
* its share of a probe matrix — sockets opened inside its containers' and namespace hosts'
  network namespaces (not its VMs') —
  by ``python3 -m hybridnb.services.probe.share`` in the same agent container
  (:func:`hybridnb.remote.backend.share_runner`), merged with the other hosts' shares by
  :mod:`hybridnb.services.probe.coordinate`;
* watching it: its links and counters read by the agent (``links dump``: the bridge proxy's
  ``links_there``, :class:`~hybridnb.drivers.base.LinksThere`) for monitor and doctor, and
  packets captured there by ``python3 -m hybridnb.remote.sniff`` (:mod:`hybridnb.remote.sniff`,
  a packet socket streaming a pcap back) for capture; and the doctor's read-only reads of
  the host — sysctls, the iptables filter table, routes, a bridge's FDB, the ARP sweep on
  the lab's own bridge, addresses inside its containers, nftables' features
  (:mod:`hybridnb.remote.hostread`, the bridge proxy's ``read_there``,
  :class:`~hybridnb.drivers.base.HostThere`) — so the ordinary checks judge that host.

:func:`hybridnb.remote.backend.remote_backend` bundles it into an ordinary
:class:`~hybridnb.drivers.base.Backend`.  Nothing here enters a network namespace of this
machine: the remote backend's target has no namespace and none of its drivers opens a
netlink socket here.  The modules are imported lazily (the agent image carries this package
and runs ``python3 -m hybridnb.remote.agent``).
"""
