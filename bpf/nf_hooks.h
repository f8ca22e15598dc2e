/* The netfilter hook functions registered at one hook of one network namespace, as
 * bpf/nf_hooks.bpf.c copies them from the kernel's struct nf_hook_entries.
 *
 * Declared here once; kdbg/causes/nfhooks.py mirrors it with ctypes and a unit test
 * fails when the two drift apart. Keep fields naturally aligned and use only the
 * __u8/__u16/__u32/__s32/__u64 types the mirror understands.
 */
#ifndef KDBG_NF_HOOKS_H
#define KDBG_NF_HOOKS_H

#define KDBG_NF_HOOKS_MAX 32		/* entries copied; num says how many there were */
#define KDBG_NF_NAMESIZ 32		/* XT_TABLE_MAXNAMELEN */

/* Which read failed: err. */
#define KDBG_NF_ERR_NET 1		/* the calling thread's struct net */
#define KDBG_NF_ERR_ENTRIES 2		/* the hook's nf_hook_entries */

struct kdbg_nf_hook {
	__u64 fn;		/* nf_hook_entry.hook: the hook function */
	__u64 priv;		/* nf_hook_entry.priv: its argument (an nft chain, an xt_table) */
	__u64 ops;		/* the nf_hook_ops it was registered with (orig_ops[i]) */
	__s32 priority;		/* ops->priority: the order of the entries */
	__u32 pad0;
	char table[KDBG_NF_NAMESIZ];	/* the string at priv + xt_table.name: an x_tables
					 * hook function's table name (meaningless for any
					 * other function) */
};

struct kdbg_nf_hooks {
	__u64 net;		/* the struct net read: the calling thread's namespace */
	__u64 entries;		/* its nf_hook_entries at the hook (0: none registered) */
	__u32 inum;		/* the namespace's inode (net->ns.inum) */
	__u32 num;		/* num_hook_entries */
	__u32 copied;		/* entries copied (num, at most KDBG_NF_HOOKS_MAX) */
	__s32 err;		/* 0, or KDBG_NF_ERR_* */
	struct kdbg_nf_hook hooks[KDBG_NF_HOOKS_MAX];
};

#endif
