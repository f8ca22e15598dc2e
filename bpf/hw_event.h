/* What the hardware-drop program (devlink_trap.bpf.c) hands to user space.
 *
 * Declared here once; kdbg/hwdrops/event.py mirrors it with ctypes and a unit
 * test fails when the two drift apart. Only __u8/__u16/__u32/__u64/char fields,
 * naturally aligned.
 */
#ifndef KDBG_HW_EVENT_H
#define KDBG_HW_EVENT_H

#define KDBG_HW_BUSLEN 16
#define KDBG_HW_DEVLEN 32
#define KDBG_HW_DRVLEN 16
#define KDBG_HW_TRAPLEN 40
#define KDBG_HW_GROUPLEN 32
#define KDBG_HW_IFNAMSIZ 16

/* One trap report (devlink_trap_report), streamed by kdbg watch --hw. */
struct kdbg_hw_event {
	__u64 time_ns;		/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 cpu;
	__u32 len;		/* skb->len */
	__u32 trap_type;	/* enum devlink_trap_type: 0 drop, 1 exception, 2 control */
	__u16 sport;		/* host order */
	__u16 dport;
	__u8 family;		/* 4, 6, or 0 when no L3 header was handed over */
	__u8 l4proto;
	__u8 l4_valid;		/* ports were read */
	__u8 pad0;
	__u8 saddr[16];		/* IPv4 in the first four bytes */
	__u8 daddr[16];
	char bus[KDBG_HW_BUSLEN];
	char device[KDBG_HW_DEVLEN];
	char driver[KDBG_HW_DRVLEN];
	char trap[KDBG_HW_TRAPLEN];
	char group[KDBG_HW_GROUPLEN];
	char input_port[KDBG_HW_IFNAMSIZ];	/* "" when the device gave none */
};

/* Key of the in-kernel per-CPU counts behind kdbg_hw_drops_total. */
struct kdbg_hw_key {
	char bus[KDBG_HW_BUSLEN];
	char device[KDBG_HW_DEVLEN];
	char trap[KDBG_HW_TRAPLEN];
	char group[KDBG_HW_GROUPLEN];
	char input_port[KDBG_HW_IFNAMSIZ];
};

/* Slots of the per-CPU counters array. */
#define KDBG_HW_CTR_LOST 0		/* ring buffer full: report not delivered */
#define KDBG_HW_CTR_STATS_FULL 1	/* count table full: report not counted per key */
#define KDBG_HW_NR_CTRS 2

#endif
