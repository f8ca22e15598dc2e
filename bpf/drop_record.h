/* The record kdbg watch --write keeps for each matching drop: the drop event and
 * the packet's first bytes.
 *
 * Declared here once; kdbg/record/layout.py mirrors it with ctypes and a unit test
 * fails when the two drift apart. In the ring buffer (and in a recording, see
 * docs/record.md) each record is this header followed by the snapshot: snaplen
 * bytes rounded up to 8, of which caplen are the packet's.
 */
#ifndef KDBG_DROP_RECORD_H
#define KDBG_DROP_RECORD_H

#include "drop_event.h"

/* Link types of the snapshot: what its first byte is. */
#define KDBG_LINK_NONE 0	/* nothing captured (no header offsets) */
#define KDBG_LINK_ETHERNET 1	/* from the MAC header (Ethernet or loopback device) */
#define KDBG_LINK_RAW 2		/* from the network header: IPv4 or IPv6, no link header */

struct kdbg_drop_record {
	struct kdbg_drop_event ev;
	__u32 caplen;		/* bytes of the snapshot that are the packet's */
	__u32 wirelen;		/* the packet's length from the snapshot's first byte on */
	__u16 linktype;		/* KDBG_LINK_* */
	__u16 devtype;		/* net_device.type (ARPHRD_*), 0 without a device */
	__u32 pad0;
};

#endif
