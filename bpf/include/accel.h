/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Structs shared by every accel BPF program and mirrored by user space.
 *
 * Must stay in sync with src/maps/layout/ (one module per component).
 * test/maps/layout.test.ts reads the BTF of layout.btf.o (bpf/layout.c,
 * built from this header but never loaded) and fails if sizes, offsets or
 * enumerators drift. A struct or enum added here goes into bpf/layout.c.
 * Only fixed-width types and explicit padding: no bool, no implicit holes.
 */
#ifndef ACCEL_H
#define ACCEL_H

/*
 * One direction of a TCP connection as seen by one of its sockets.
 * Addresses are in network byte order, IPv4 stored as v4-mapped IPv6
 * (::ffff:a.b.c.d) with family AF_INET, so that an AF_INET socket and an
 * AF_INET6 socket talking over v4-mapped addresses produce equal keys.
 * Ports are in host byte order. netns is the network namespace cookie:
 * identical tuples in two namespaces never collide.
 */
struct accel_sock_key {
	__u64 netns;
	__u32 family;
	__u32 local_port;
	__u32 remote_port;
	__u32 pad;
	__u32 local_ip[4];
	__u32 remote_ip[4];
};

/* A listening socket of the cgroup: where local peers connect to. ip is
 * all zeros for a wildcard listener; family is the listening socket's, so
 * that 0.0.0.0 (IPv4 only) and :: (IPv6, and IPv4 unless IPV6_V6ONLY) are
 * told apart. */
struct accel_listen_key {
	__u64 netns;
	__u32 port;
	__u32 family;
	__u32 ip[4];
};

/* A listening socket that sockops does not track (it listened before
 * sockops was attached), as iter_listeners.c reports it to user space. ip
 * is in the 16-byte key form (IPv4 as v4-mapped), port in host order. */
struct accel_listener_rec {
	__u64 cookie;
	__u64 cgroup_id;
	__u32 port;
	__u32 pad;
	__u32 ip[4];
};

/* Runtime switches, one element of an ARRAY map, written by user space. */
struct accel_config {
	/* 0: sk_msg passes everything (used while detaching). */
	__u32 redirect_enabled;
	/* Bytes a fast-path socket may hold unread (redirected to it) before
	 * its writer is held back (accel_backpressure.h); less if the reader
	 * set a smaller SO_RCVBUF itself. */
	__u32 queue_limit;
	/* The attached cgroup's id, for nested attachments (accel_owners.h):
	 * a socket of a cgroup below a deeper attachment is that one's. 0 (an
	 * attachment made before this field): every socket of the subtree. */
	__u64 cgroup_id;
#ifdef ACCEL_TEST_LAYOUT_VARIANT
	/* Only in a test build (test/integration/upgrade.test.ts): a map
	 * whose layout changed, which an upgrade must refuse to carry over. */
	__u64 test_layout_variant;
#endif
};

/* A socket of the cgroup in, or about to enter, accel_sock_hash (value of
 * accel_members): its kernel address and cookie, so that skmsg.c can look
 * at a peer's receive queue before redirecting to it. */
struct accel_member {
	__u64 sk;
	__u64 cookie;
	/* ACCEL_MEMBER_*, set by sockops.c as the socket goes in. */
	__u32 flags;
	/* sockops.c: the socket's snd_nxt when it was established, before it
	 * could send a byte: write_seq - snd_base is what it has queued to TCP
	 * since (a shortcut's relay sends by TCP only, accel_shortcut.h). */
	__u32 snd_base;
};

/* accel_member.flags: one of accel proxy's upstream sockets (it carries
 * the proxy mark): the socket that connects to it counts what it sends
 * (ACCEL_ST_PROXY_FACING), as a shortcut needs (accel_shortcut.h). */
#define ACCEL_MEMBER_PROXY 1

/* Per-socket state kept in socket-local storage (one map per attachment). */
struct accel_sock_state {
	/* skmsg.c: set once a message of this socket went the normal TCP way:
	 * from then on nothing is redirected, otherwise the peer could read
	 * later bytes (redirected) before earlier ones (still in its TCP
	 * receive queue). */
	__u32 tcp_only;
	/* One field, two kinds of socket: a listener never sends, and a
	 * connected socket is never recorded as a listener. */
	union {
		/* sockops.c, iter_listeners.c: set on a listening socket
		 * recorded in accel_listeners; its close takes the record
		 * back. */
		__u32 listener;
		/* skmsg.c, a connected socket: the size of a message cut to
		 * start a hold at a multiple (accel_cut.h), until the program
		 * runs on its rest; 0 otherwise. */
		__u32 cut_size;
	};
	/* skmsg.c: the peer held a receive buffer's worth unread, so this
	 * socket sends the TCP way until that path has drained
	 * (accel_backpressure.h). */
	__u32 held;
	/* ACCEL_ST_*. */
	__u32 flags;
	/* skmsg.c, only with ACCEL_ST_PROXY_FACING: bytes of this socket
	 * redirected into its TCP peer, the proxy's socket (what it sent the
	 * proxy by TCP is the kernel's count: write_seq - snd_base). */
	__u64 to_proxy;
	/* sockops.c, with ACCEL_ST_PROXY_FACING: snd_nxt at establishment,
	 * before the socket could send a byte. */
	__u32 snd_base;
	/* skmsg.c, an egress shortcut only: bytes of this socket redirected
	 * into the proxy's upstream socket itself (accel_shortcut.h), which
	 * count in that socket's write_seq beside what the proxy wrote. */
	__u32 to_relay;
};

/* accel_sock_state.flags. PROXY_FACING (sockops.c, at establishment): the
 * socket's TCP peer is accel proxy's, so skmsg.c counts in to_proxy every
 * byte it sends and looks for a shortcut; only such a socket can take one,
 * and only it pays for that. SHORTCUT_ON (skmsg.c): its last message went
 * by the shortcut. SHORTCUT_SEEN: a shortcut carried at least one of its
 * messages (counted once). */
#define ACCEL_ST_PROXY_FACING 1
#define ACCEL_ST_SHORTCUT_ON 2
#define ACCEL_ST_SHORTCUT_SEEN 4

/*
 * A shortcut (value of accel_shortcuts, keyed by the sending socket's own
 * key): the proxy sits between this socket and `dest`, both local, and has
 * let them talk directly. Written by the proxy only; skmsg.c reads it. The
 * sender's bytes go to `dest` only while everything it sent the proxy's way
 * (its to_proxy) has been written by the proxy into `relay`, its socket
 * towards `dest`, and read by `dest` (accel_shortcut.h); otherwise the
 * message takes the TCP way to the proxy, which relays it.
 * An egress shortcut (the proxy's upstream connects to another host) has
 * `dest` = `relay`, the proxy's upstream socket itself: the sender's bytes
 * go out on it, queued behind what the proxy wrote there.
 */
struct accel_shortcut {
	struct accel_sock_key dest;
	/* Copied from accel_members when the proxy made the shortcut. */
	struct accel_member dest_sock;
	struct accel_member relay_sock;
	/* skmsg.c: bytes the sender sent by this shortcut (0 when the proxy
	 * writes it). Only the sender writes it, under its socket lock, as a
	 * message takes the shortcut; the proxy's idle timeout reads it: the
	 * bytes of a local shortcut show on none of the proxy's sockets. */
	__u64 sent;
#ifdef ACCEL_TEST_SHORTCUT_LAYOUT_VARIANT
	/* Only in a test build (test/integration/shortcut.test.ts): entries of
	 * another layout, which accel proxy must not write. */
	__u64 test_layout_variant;
#endif
};

/* Indexes into the per-CPU counters array. */
enum accel_counter {
	ACCEL_CNT_SOCK_INSERTED = 0,
	ACCEL_CNT_SOCK_INSERT_FAILED,
	ACCEL_CNT_SOCK_SKIPPED_REMOTE,
	ACCEL_CNT_SOCK_SKIPPED_PEER,
	ACCEL_CNT_SOCK_SKIPPED_BYPASS,
	ACCEL_CNT_SOCK_SKIPPED_DATA,
	ACCEL_CNT_MSG_REDIRECTED,
	ACCEL_CNT_BYTES_REDIRECTED,
	ACCEL_CNT_MSG_PASSED,
	ACCEL_CNT_BYTES_PASSED,
	ACCEL_CNT_CONN_TCP_ONLY,
	/* stream_verdict.c: bytes a retransmission repeated at the head of an
	 * skb, cut off; and such bytes it could not cut. */
	ACCEL_CNT_BYTES_REPEATED,
	ACCEL_CNT_BYTES_REPEAT_SENT,
	/* skmsg.c: a connection direction held back because its peer did not
	 * read (it goes the TCP way), and released again; bytes sent the TCP
	 * way while held (also in ACCEL_CNT_BYTES_PASSED). */
	ACCEL_CNT_BACKPRESSURE_ON,
	ACCEL_CNT_BACKPRESSURE_OFF,
	ACCEL_CNT_BYTES_HELD,
	/* sockops.c: a socket of a cgroup below a deeper attachment, which
	 * owns it (accel_owners.h): left to that one. */
	ACCEL_CNT_SOCK_SKIPPED_NESTED,
	/* skmsg.c: connection directions that sent by a shortcut, messages
	 * and bytes sent by one, and bytes of shortcut sockets sent the TCP
	 * way to the proxy instead (hand-off not drained, destination full). */
	ACCEL_CNT_SHORTCUT_DIRECTIONS,
	ACCEL_CNT_SHORTCUT_MSGS,
	ACCEL_CNT_SHORTCUT_BYTES,
	ACCEL_CNT_SHORTCUT_DETOURED,
	/* skmsg.c: a shortcut taken (again) after bytes of its direction went
	 * through the proxy: the hand-off, or a reader that caught up. */
	ACCEL_CNT_SHORTCUT_RESUMED,
	ACCEL_CNT_MAX,
};

/*
 * Transparent interception (tc_tproxy.c). One rule: TCP to a destination
 * inside a prefix and a port range is steered to the proxy. ip and mask are
 * in network byte order over the 16-byte key form (IPv4 as v4-mapped, its
 * mask covering the ::ffff: part too), so one comparison serves both
 * families.
 */
struct accel_intercept_rule {
	__u32 ip[4];
	__u32 mask[4];
	__u32 port_min;
	__u32 port_max;
};

/* Settings of the interception, one element of an ARRAY map. */
struct accel_tproxy_config {
	/* Only connections from this cgroup (or below it) are intercepted;
	 * cgroup_level is its depth for bpf_skb_ancestor_cgroup_id(). */
	__u64 cgroup_id;
	__u32 cgroup_level;
	/* The proxy listens on 127.0.0.1 and ::1 at this port. */
	__u32 proxy_port;
	__u32 lo_ifindex;
	/* Put on steered packets; an ip rule routes it to a local table. */
	__u32 intercept_mark;
	/* Carried by the proxy's own upstream sockets (SO_MARK). Not what
	 * exempts them (a process with CAP_NET_RAW can set any mark): a SYN of
	 * the cgroup carrying it from another socket is steered like any
	 * other, and counted. */
	__u32 proxy_mark;
	__u32 rule_count;
	/* ACCEL_TP_F_*: set by user space. */
	__u32 flags;
};

/* accel_tproxy_config.flags: sk_lookup.c is attached to the network
 * namespace (set once its link is, cleared before it goes): a SYN that
 * finds a proxy-side TIME_WAIT socket may be left to the kernel. */
#define ACCEL_TP_F_SK_LOOKUP 1

/* A connection being steered to the proxy (value of accel_tproxy_flows,
 * and of accel_tproxy_closed once the application's socket has closed). */
struct accel_tproxy_flow {
	__u32 proxy_port;
	/* Set when the SYN was handed to a proxy listener of the attached
	 * cgroup: the proxy's side will then be on the fast path as well, so
	 * the application's side may go there. */
	__u32 proxy_in_cgroup;
};

/* Key of accel_proxy_listeners (accel_proxy_maps.h): a proxy's listening
 * socket, by the network namespace cookie it lives in (SO_NETNS_COOKIE),
 * its family (AF_INET or AF_INET6) and its port in host order. */
struct accel_proxy_key {
	__u64 netns;
	__u32 family;
	__u32 port;
};

/* Indexes into the interception's per-CPU counters. */
enum accel_tproxy_counter {
	ACCEL_TP_PACKETS_SEEN = 0,
	ACCEL_TP_PACKETS_INTERCEPTED,
	ACCEL_TP_SYN_INTERCEPTED,
	ACCEL_TP_PROXY_SKIPPED,
	ACCEL_TP_ASSIGNED_ESTABLISHED,
	ACCEL_TP_ASSIGNED_LISTENER,
	ACCEL_TP_ASSIGN_FAILED,
	/* A SYN refused because no registered proxy listener was there (also
	 * counted when another socket listened on the proxy port), and those
	 * of them where another socket did: it got nothing. */
	ACCEL_TP_NO_LISTENER,
	ACCEL_TP_FOREIGN_LISTENER,
	/* Fail closed (tc_tproxy.c): a packet of the cgroup the egress program
	 * cannot match safely (TCP in IP fragments, behind an IPv6 routing
	 * header, inside a tunnel or IPsec, a VLAN/MPLS/PPPoE frame), dropped;
	 * a SYN that found accel_tproxy_flows full, dropped (the client
	 * retries as with a full accept queue). */
	ACCEL_TP_UNPARSED_DROPPED,
	ACCEL_TP_FLOWS_FULL,
	/* Steered SYNs that carried IPv4 options or IPv6 extension headers
	 * (steered like any other). */
	ACCEL_TP_SYN_IP_OPTIONS,
	/* sockops.c: flows taken out of accel_tproxy_flows because the
	 * application's socket closed. */
	ACCEL_TP_FLOWS_CLOSED,
	/* A SYN of the cgroup carrying the proxy mark from a socket that is
	 * not one of the proxy's (accel_proxy_sockets): steered like any
	 * other. */
	ACCEL_TP_MARK_FORGED,
	/* A steered SYN whose 4-tuple a proxy-side socket still holds (TIME_WAIT
	 * or open): handed to the proxy listener all the same, never to that
	 * socket (the kernel drops it until the old socket is gone). */
	ACCEL_TP_SYN_TUPLE_BUSY,
	/* cgroup_egress.c: a SYN of the cgroup to a covered destination that
	 * leaves by a device interception does not hook, dropped; UDP of the
	 * cgroup to a covered destination (attach --intercept-udp refuse),
	 * refused. */
	ACCEL_TP_UNHOOKED_REFUSED,
	ACCEL_TP_UDP_REFUSED,
	/* A steered SYN whose 4-tuple a proxy-side TIME_WAIT socket holds, left
	 * to the kernel to retire that socket (recorded in accel_tproxy_tw);
	 * sk_lookup.c then handing it to the proxy listener; and such SYNs
	 * dropped instead (the record could not be written, or no proxy
	 * listener was there when the kernel looked one up). */
	ACCEL_TP_SYN_TW_RETIRED,
	ACCEL_TP_TW_ASSIGNED,
	ACCEL_TP_TW_DROPPED,
	ACCEL_TP_MAX,
};

/* Devices at most interception hooks (attach --iface). */
#define ACCEL_IFACES_MAX 16
/* accel_tproxy_egress.flags: refuse UDP to covered destinations. */
#define ACCEL_EGRESS_REFUSE_UDP 1

/* Settings of the cgroup egress guard (cgroup_egress.c), one element of an
 * ARRAY map: the devices whose tc egress program steers (a covered SYN
 * leaving by any other is dropped), and what to do with UDP. */
struct accel_tproxy_egress {
	__u32 flags;
	__u32 iface_count;
	__u32 ifindex[ACCEL_IFACES_MAX];
};

/* Per-socket state of a spliced socket (sksplice.c), keyed by its cookie;
 * created before the socket enters the map, deleted when its pair ends. */
struct accel_splice_sock {
	/* Bytes the verdict program redirected from this socket to its peer;
	 * user space reports them when the pair ends. */
	__u64 bytes_redirected;
	/* TCP sequence number just past the bytes the verdict has taken from
	 * this socket, set from copied_seq at the first skb after the hand-off
	 * (seq_known): bytes of a later skb before it were handed over already
	 * and are cut off. */
	__u32 next_seq;
	__u32 seq_known;
};

/* Where the stream verdict of the fast path (stream_verdict.c) stands in a
 * socket's receive stream, keyed by socket cookie: the TCP sequence number
 * just past what it took, valid once known is set. */
struct accel_rx_seq {
	__u32 next_seq;
	__u32 known;
};

/* Indexes into the splice counters. Bytes and messages are counted by the
 * verdict program, pairs by the one process owning the object. */
enum accel_splice_counter {
	ACCEL_SPLICE_BYTES_REDIRECTED = 0,
	ACCEL_SPLICE_SKBS_REDIRECTED,
	ACCEL_SPLICE_SKBS_PASSED,
	ACCEL_SPLICE_PAIRS_SPLICED,
	ACCEL_SPLICE_PAIRS_CLOSED,
	ACCEL_SPLICE_FINS_DROPPED,
	ACCEL_SPLICE_BYTES_REPEATED,
	ACCEL_SPLICE_BYTES_REPEAT_SENT,
	/* A socket's destination had a full send buffer with bytes waiting
	 * behind it: the socket was put in accel_splice_held for its owner to
	 * hold back (sksplice.c); user space counts the releases. */
	ACCEL_SPLICE_HOLDS,
	ACCEL_SPLICE_RELEASES,
	ACCEL_SPLICE_CNT_MAX,
};

#define ACCEL_SOCKHASH_MAX 65536
#define ACCEL_RULES_MAX 32
/* Default size of accel_tproxy_flows (attach --max-flows). */
#define ACCEL_FLOWS_MAX 16384
/* Flows of closed sockets kept for their last packets (a RST sent after
 * the close, an ACK from TIME_WAIT). */
#define ACCEL_FLOWS_CLOSED_MAX 16384
#define ACCEL_BYPASS_MAX 64
#define ACCEL_LISTENERS_MAX 4096
#define ACCEL_PROXY_LISTENERS_MAX 1024
/* SYNs on their way to retire a TIME_WAIT socket (accel_tproxy_tw). */
#define ACCEL_TW_SYNS_MAX 4096
/* Attachments (and running self-tests) on the node at once. */
#define ACCEL_OWNERS_MAX 4096
/* How far below its attached cgroup a socket's cgroup may be for the
 * attachment to know it its own (accel_owners.h). */
#define ACCEL_OWNER_DEPTH_MAX 32

#endif /* ACCEL_H */
