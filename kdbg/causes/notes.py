"""kdbg's notes on every drop reason, in one table: what it means, what usually causes
it, one command to confirm, and advice. ``kdbg reasons`` prints the meanings; every
cause carries the notes of its reason (docs/diagnose.md has the table).

Keyed by reason *name* only: the numbers come from the running kernel
(:class:`kdbg.symbols.reasons.ReasonTable`), which numbers them differently on
6.1 and 6.18. A reason this table lacks still gets the kernel's name and a
generic entry; a name here that the running kernel lacks is simply never used.

``confirm`` is a command template: ``{ifname}``, ``{saddr}``, ``{daddr}``,
``{sport}``, ``{dport}`` and ``{proto}`` come from the drop; kdbg wraps it in
``ip netns exec NAME`` (or ``nsenter --net=…``) for the drop's namespace.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Notes:
    """kdbg's notes on one drop reason."""

    meaning: str
    causes: tuple[str, ...]
    confirm: str
    advice: str


def _a(meaning: str, causes: str, confirm: str, advice: str) -> Notes:
    return Notes(meaning, tuple(c.strip() for c in causes.split(";")), confirm, advice)


TABLE: dict[str, Notes] = {
    "NOT_SPECIFIED": _a(
        "freed with kfree_skb() and no reason given",
        "a code path not yet annotated with a drop reason; often normal frees of "
        "packets that were handled",
        "kdbg watch --reason NOT_SPECIFIED --stack --count 5",
        "look at the location and stack: the function that freed it tells the story"),
    "NO_SOCKET": _a(
        "no socket takes packets for this protocol, address and port",
        "the service is not running; it listens on another address (127.0.0.1 vs the "
        "interface) or another family; it runs in another network namespace",
        "ss -lntu sport = :{dport}",
        "start the service, or bind it to this address (or 0.0.0.0 / ::) in this netns"),
    "SOCKET_FILTER": _a(
        "a socket filter (SO_ATTACH_FILTER, SO_ATTACH_BPF) rejected the packet",
        "a classic or eBPF filter on the receiving socket (tcpdump-like tools, "
        "SO_REUSEPORT steering)",
        "ss -0 -p; bpftool prog show",
        "check which process attached the filter and what it accepts"),
    "SOCKET_RCVBUFF": _a(
        "the receiving socket's buffer was full",
        "the application reads too slowly; SO_RCVBUF or net.core.rmem_max too small for "
        "the burst",
        "ss -lnum sport = :{dport}",
        "read faster (more threads, recvmmsg), or raise SO_RCVBUF / net.core.rmem_max"),
    "SOCKET_BACKLOG": _a(
        "the socket's backlog (packets queued while the socket was busy) was full",
        "the socket is locked by its owner for long stretches; bursts larger than "
        "sk_rcvbuf + sk_sndbuf",
        "ss -tnm sport = :{dport}",
        "raise the socket's buffers, shorten the time the application holds the socket"),
    "SOCKET_CLOSE": _a(
        "the socket was closed with this packet still queued",
        "the application closed a socket it had not read to the end",
        "ss -tan sport = :{dport}",
        "read before close, or accept that unread data is discarded"),
    "PKT_TOO_SMALL": _a(
        "the packet is shorter than its headers say",
        "a truncated or malformed packet; a length field that lies (fuzzing, broken "
        "encapsulation, a raw socket)",
        "tcpdump -ni {ifname} -vv",
        "find the sender of malformed packets; check the encapsulation's MTU"),
    "TCP_CSUM": _a(
        "bad TCP checksum",
        "corruption on the wire or in a NIC; a checksum offload bug; a raw-socket sender "
        "that computes it wrong",
        "ethtool -k {ifname} | grep checksum; nstat -az TcpInCsumErrors",
        "check the sender and the NIC's offload settings (ethtool -K {ifname} rx off)"),
    "UDP_CSUM": _a(
        "bad UDP checksum",
        "corruption on the wire or in a NIC; a checksum offload bug; a raw-socket sender "
        "that computes it wrong",
        "ethtool -k {ifname} | grep checksum; nstat -az UdpInCsumErrors",
        "check the sender and the NIC's offload settings (ethtool -K {ifname} rx off)"),
    "ICMP_CSUM": _a(
        "bad ICMP checksum",
        "a corrupted or hand-crafted ICMP message",
        "nstat -az IcmpInCsumErrors",
        "check the sender of the ICMP messages"),
    "NETFILTER_DROP": _a(
        "a netfilter rule (nftables, or iptables through iptables-nft) dropped it",
        "a DROP or REJECT rule matched; a base chain's policy is drop and no rule accepted",
        "nft -a list ruleset",
        "change or remove the rule named, or add an accept rule before it"),
    "OTHERHOST": _a(
        "the frame was addressed to another host's MAC address",
        "the interface is promiscuous (tcpdump, a bridge); a stale neighbour entry on the "
        "sender points here",
        "ip -d link show {ifname}",
        "usually harmless; if unexpected, fix the sender's neighbour entry"),
    "IP_CSUM": _a(
        "bad IPv4 header checksum",
        "corruption on the wire or in a NIC; a hand-crafted packet",
        "nstat -az IpInHdrErrors",
        "check the sender and the link"),
    "IP_INHDR": _a(
        "malformed IP header (version, length or header length wrong)",
        "corruption; a broken tunnel or raw-socket sender",
        "nstat -az IpInHdrErrors Ip6InHdrErrors",
        "check the sender and any encapsulation on the path"),
    "IP_RPFILTER": _a(
        "reverse-path filtering rejected the source address",
        "rp_filter is strict (1) and the route back to the source leaves by another "
        "interface; asymmetric routing; a spoofed source",
        "sysctl net.ipv4.conf.all.rp_filter net.ipv4.conf.{ifname}.rp_filter; "
        "ip route get {saddr}",
        "add a route back to {saddr} via {ifname}, or set rp_filter to 2 (loose) or 0 "
        "where routing is asymmetric on purpose"),
    "UNICAST_IN_L2_MULTICAST": _a(
        "a unicast IP packet arrived in a link-layer multicast or broadcast frame",
        "a misbehaving sender or switch",
        "tcpdump -eni {ifname}",
        "find the sender; set net.ipv4.conf.{ifname}.drop_unicast_in_l2_multicast=0 to allow"),
    "XFRM_POLICY": _a(
        "an IPsec (xfrm) policy rejected the packet",
        "a policy requires IPsec and the packet was not protected; a block policy",
        "ip xfrm policy; ip xfrm state",
        "fix the IPsec policy or the SA"),
    "IP_NOPROTO": _a(
        "no handler for the IP protocol number",
        "the protocol's module is not loaded (sctp, gre…); nothing registered for it",
        "lsmod",
        "load the protocol's module, or stop sending that protocol here"),
    "PROTO_MEM": _a(
        "the protocol's memory limit was reached",
        "net.ipv4.{proto}_mem is exceeded system-wide: many sockets with full buffers",
        "cat /proc/net/sockstat; sysctl net.ipv4.{proto}_mem",
        "find the sockets holding memory (ss -m), or raise net.ipv4.{proto}_mem"),
    "TCP_MD5NOTFOUND": _a(
        "TCP MD5 signature expected but absent",
        "a BGP peer configured with a password on one side only",
        "ss -tni sport = :{dport}",
        "configure TCP-MD5 on both ends, or on neither"),
    "TCP_MD5UNEXPECTED": _a(
        "TCP MD5 signature present but not expected",
        "the peer signs, this side has no key for it",
        "ss -tni sport = :{dport}",
        "configure the key here, or remove it on the peer"),
    "TCP_MD5FAILURE": _a(
        "TCP MD5 signature wrong",
        "the two ends use different passwords",
        "ss -tni sport = :{dport}",
        "make both ends use the same password"),
    "TCP_FLAGS": _a(
        "invalid TCP flag combination for the connection's state",
        "scanners (NULL, XMAS); a middlebox that rewrote flags; a stale peer",
        "nstat -az TcpExtTCPAbortOnData",
        "usually a scan or a confused peer: check the source"),
    "TCP_ZEROWINDOW": _a(
        "TCP data arrived while the receive window was zero",
        "the application does not read; the peer ignores the zero window",
        "ss -tnmi dport = :{sport}",
        "make the application read faster"),
    "TCP_OLD_DATA": _a(
        "TCP data entirely before the receive window (a retransmission of acked data)",
        "lost ACKs; the peer retransmits needlessly",
        "nstat -az TcpExtTCPDSACKRecv",
        "usually harmless; many of them mean ACK loss on the path"),
    "TCP_OVERWINDOW": _a(
        "TCP data beyond the receive window",
        "a peer that ignores the advertised window; window scaling broken by a middlebox",
        "ss -tni",
        "check middleboxes that strip window scaling"),
    "TCP_OFOMERGE": _a(
        "out-of-order TCP data already held",
        "duplicate out-of-order segments (retransmissions)",
        "nstat -az TcpExtTCPOFOMerge",
        "usually harmless"),
    "TCP_RFC7323_PAWS": _a(
        "TCP timestamp older than the last one seen (PAWS)",
        "NAT mixing several hosts behind one address; a peer that reset its clock",
        "nstat -az TcpExtPAWSEstab",
        "check NAT in front of the peers; tcp_timestamps on both ends"),
    "TCP_INVALID_SEQUENCE": _a(
        "TCP sequence number not acceptable",
        "a stale or spoofed segment; state lost on a middlebox",
        "nstat -az TcpExtTCPACKSkippedSeq",
        "check for asymmetric paths through stateful middleboxes"),
    "TCP_RESET": _a(
        "TCP RST received: the connection is reset and the segment freed",
        "the peer closed or aborted; a firewall injected a reset",
        "ss -tan dst {saddr}",
        "look at why the peer resets (its logs, its firewall)"),
    "TCP_INVALID_SYN": _a(
        "SYN on an established connection",
        "a peer that restarted and reused the ports",
        "ss -tan dst {saddr}",
        "usually recovers by itself (challenge ACK)"),
    "TCP_CLOSE": _a(
        "TCP segment for a closed connection",
        "late segments after close; TIME_WAIT recycling",
        "ss -tan state time-wait",
        "usually harmless"),
    "TCP_FASTOPEN": _a(
        "TCP Fast Open data not accepted",
        "TFO cookie invalid or TFO disabled",
        "sysctl net.ipv4.tcp_fastopen",
        "check net.ipv4.tcp_fastopen on both ends"),
    "TCP_OLD_ACK": _a(
        "TCP ACK older than the unacknowledged data",
        "reordering; duplicate ACKs",
        "nstat -az TcpExtTCPACKSkippedChallenge",
        "usually harmless"),
    "TCP_TOO_OLD_ACK": _a(
        "TCP ACK far older than anything outstanding",
        "a stale segment; a middlebox replaying",
        "ss -tni",
        "usually harmless"),
    "TCP_ACK_UNSENT_DATA": _a(
        "TCP ACK for data never sent",
        "a confused or malicious peer; sequence numbers rewritten on the path",
        "ss -tni",
        "check middleboxes that rewrite sequence numbers"),
    "TCP_OFO_QUEUE_PRUNE": _a(
        "out-of-order queue pruned under memory pressure",
        "heavy reordering or loss with small receive buffers",
        "nstat -az TcpExtOfoPruned",
        "raise tcp_rmem, investigate loss on the path"),
    "TCP_OFO_DROP": _a(
        "out-of-order segment dropped (no room)",
        "receive buffer full of out-of-order data",
        "nstat -az TcpExtTCPOFODrop",
        "raise tcp_rmem"),
    "TCP_LISTEN_OVERFLOW": _a(
        "the listening socket's accept queue was full",
        "the application does not accept() fast enough; listen() backlog or "
        "net.core.somaxconn too small",
        "ss -lnt sport = :{dport}; sysctl net.core.somaxconn",
        "accept faster, or raise the listen() backlog and net.core.somaxconn"),
    "TCP_OLD_SEQUENCE": _a(
        "TCP segment entirely before the window",
        "retransmission of data already received",
        "nstat -az TcpExtTCPDSACKRecv",
        "usually harmless"),
    "IP_OUTNOROUTES": _a(
        "no route for an outgoing packet",
        "no default route; the destination's subnet is not configured",
        "ip route get {daddr}",
        "add a route to {daddr}"),
    "IP_INNOROUTES": _a(
        "no route for an incoming packet (not local, not forwardable)",
        "the destination is not a local address and forwarding has no route for it",
        "ip route get {daddr} from {saddr} iif {ifname}",
        "add the address or a route; check net.ipv4.ip_forward"),
    "IP_INADDRERRORS": _a(
        "invalid destination address for input",
        "a packet to a broadcast or martian address; forwarding disabled for it",
        "ip route get {daddr} from {saddr} iif {ifname}",
        "check the addressing of the sender"),
    "IP_LOCAL_SOURCE": _a(
        "the source address is one of this host's own",
        "spoofing; a loop; a duplicated address on the network",
        "ip addr show to {saddr}",
        "find who else uses {saddr}"),
    "IP_INVALID_SOURCE": _a(
        "invalid (martian) source address",
        "a broadcast/multicast/zero source; a misconfigured sender",
        "sysctl net.ipv4.conf.{ifname}.log_martians",
        "fix the sender's address"),
    "IP_INVALID_DEST": _a(
        "invalid destination address",
        "a packet to a martian destination",
        "ip route get {daddr}",
        "fix the sender"),
    "IPV6DISABLED": _a(
        "IPv6 is disabled on the receiving interface",
        "net.ipv6.conf.{ifname}.disable_ipv6 = 1",
        "sysctl net.ipv6.conf.{ifname}.disable_ipv6",
        "enable IPv6 on {ifname}, or stop sending IPv6 there"),
    "NEIGH_CREATEFAIL": _a(
        "could not create a neighbour entry",
        "the neighbour table is full (gc_thresh3)",
        "ip -s neigh; sysctl net.ipv4.neigh.default.gc_thresh3",
        "raise gc_thresh3 or find what fills the table"),
    "NEIGH_FAILED": _a(
        "neighbour (ARP/NDISC) resolution failed",
        "the next hop does not answer ARP/NDISC: down, wrong subnet, filtered",
        "ip neigh show {daddr}",
        "check the next hop is up and on the link"),
    "NEIGH_QUEUEFULL": _a(
        "too many packets waiting for neighbour resolution",
        "bursts to an unresolved next hop",
        "ip -s neigh show {daddr}",
        "fix resolution, or raise unres_qlen_bytes"),
    "NEIGH_DEAD": _a(
        "the neighbour entry was being deleted",
        "interface went down or the entry was flushed",
        "ip neigh show {daddr}",
        "transient: check the interface"),
    "TC_EGRESS": _a(
        "a tc egress filter or action dropped it",
        "a tc filter (bpf, police, gact drop) on the egress of the device",
        "tc -s filter show dev {ifname} egress",
        "inspect the tc filters of {ifname}"),
    "TC_INGRESS": _a(
        "a tc ingress filter or action dropped it",
        "a tc filter (bpf, police, gact drop) on the ingress of the device",
        "tc -s filter show dev {ifname} ingress",
        "inspect the tc filters of {ifname}"),
    "SECURITY_HOOK": _a(
        "an LSM (SELinux, AppArmor, Smack, BPF LSM) dropped it",
        "a security policy denies this traffic for the receiving socket",
        "dmesg | grep -i -e avc -e apparmor",
        "adjust the security policy"),
    "QDISC_DROP": _a(
        "the queueing discipline dropped it",
        "the device's queue is full (txqueuelen, qdisc limits); traffic shaping",
        "tc -s qdisc show dev {ifname}",
        "raise the qdisc limit or the link's capacity, or send less"),
    "QDISC_OVERLIMIT": _a(
        "the qdisc was over its limit",
        "a shaping or queue limit reached",
        "tc -s qdisc show dev {ifname}",
        "raise the qdisc limit"),
    "CPU_BACKLOG": _a(
        "the per-CPU receive backlog was full",
        "more packets per CPU than the stack can process; net.core.netdev_max_backlog small; "
        "RPS steering all to one CPU",
        "sysctl net.core.netdev_max_backlog; cat /proc/net/softnet_stat",
        "raise net.core.netdev_max_backlog, spread load with RPS/RSS"),
    "XDP": _a(
        "an XDP program dropped it",
        "an XDP program on the interface returned XDP_DROP or aborted",
        "ip -d link show {ifname}; bpftool net",
        "inspect the XDP program attached to {ifname}"),
    "UNHANDLED_PROTO": _a(
        "no handler for the L3 protocol (ethertype)",
        "a protocol not enabled here (IPv6 module absent, unusual ethertype)",
        "tcpdump -eni {ifname}",
        "usually harmless noise from the link"),
    "SKB_CSUM": _a(
        "checksum computation failed",
        "corrupted packet",
        "nstat -az",
        "check the sender and the link"),
    "DEV_READY": _a(
        "the device was not up or not ready",
        "the interface is down, or its carrier is off",
        "ip link show {ifname}",
        "bring {ifname} up"),
    "FULL_RING": _a(
        "the device's ring was full",
        "the driver could not keep up",
        "ethtool -S {ifname}",
        "raise the ring size (ethtool -G)"),
    "NOMEM": _a(
        "out of memory while handling the packet",
        "memory pressure",
        "cat /proc/meminfo",
        "find the memory pressure"),
    "HDR_TRUNC": _a(
        "a header was truncated",
        "malformed packet",
        "tcpdump -ni {ifname} -vv",
        "find the sender"),
    "TAP_FILTER": _a(
        "a tap/tun device's filter dropped it",
        "TUNSETTXFILTER or a socket filter on the tap",
        "ip -d link show {ifname}",
        "check the tap's owner"),
    "INVALID_PROTO": _a(
        "the packet's protocol is invalid for this path",
        "a malformed packet",
        "tcpdump -ni {ifname} -vv",
        "find the sender"),
    "PKT_TOO_BIG": _a(
        "the packet is larger than the MTU and may not be fragmented",
        "PMTU discovery failing (ICMP filtered); a tunnel with a smaller MTU",
        "ip route get {daddr}; ip link show {ifname}",
        "let ICMP 'fragmentation needed'/'packet too big' through, lower the MTU or MSS"),
    "FRAG_REASM_TIMEOUT": _a(
        "fragments not reassembled in time",
        "a fragment was lost",
        "nstat -az IpReasmFails",
        "avoid fragmentation (PMTU, MSS)"),
    "DUP_FRAG": _a(
        "duplicate fragment",
        "retransmission or a misbehaving sender",
        "nstat -az IpReasmFails",
        "usually harmless"),
}

GENERIC = Notes(
    "a drop reason kdbg has no notes on",
    ("see the kernel's include/net/dropreason-core.h for this reason",),
    "kdbg watch --reason {reason} --stack --count 5",
    "look at the drop's location and stack",
)


def notes_for(name: str) -> Notes:
    """The notes for reason ``name`` (the running kernel's name), or a generic entry."""
    return TABLE.get(name, GENERIC)


def meaning(name: str) -> str:
    """What reason ``name`` means, in one line; empty when kdbg has no notes on it."""
    notes = TABLE.get(name)
    return notes.meaning if notes is not None else ""


FILLERS = {"ifname": "DEV", "saddr": "SRC", "daddr": "DST", "sport": "PORT", "dport": "PORT",
           "proto": "udp", "reason": "REASON"}


def fill(template: str, values: dict[str, object]) -> str:
    """``template`` with the drop's values, and a visible stand-in where one is unknown."""
    known = {k: (str(v) if v is not None else FILLERS[k]) for k, v in values.items()}
    for k, v in FILLERS.items():
        known.setdefault(k, v)
    return template.format(**known)
