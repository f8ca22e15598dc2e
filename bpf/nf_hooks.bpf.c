/* The netfilter hooks of a namespace, read-only: a raw tracepoint program that is never
 * attached, only run on demand (BPF_PROG_TEST_RUN) by a thread that entered the
 * namespace. It copies the hook functions registered at one hook of the calling
 * thread's namespace, in the order the kernel runs them, from the struct
 * nf_hook_entries that net->nf.hooks_<family>[hook] points to: num_hook_entries, the
 * hooks[] array of {hook function, priv}, and after it the orig_ops array (the
 * nf_hook_ops each entry was registered with, which carry the priority). For kernels
 * built without CONFIG_NETFILTER_NETLINK_HOOK, where `nft list hooks` shows nothing.
 *
 * A template: kdbg/causes/nfhooks.py fills every double-braced name from the running
 * kernel's BTF. The run's one argument, args[0]: the byte offset in struct net of the
 * hook's entries pointer. For x_tables' hook functions (ipt_do_table, ...) priv is the
 * struct xt_table, named at XT_TABLE_NAME.
 */
#include "nf_hooks.h"
#include "kdbg_read.h"

#define TASK_NSPROXY     {{TASK_NSPROXY}}
#define NSPROXY_NET      {{NSPROXY_NET}}
#define NET_INUM         {{NET_INUM}}
#define ENTRIES_NUM      {{ENTRIES_NUM}}
#define ENTRIES_HOOKS    {{ENTRIES_HOOKS}}
#define ENTRY_SIZE       {{ENTRY_SIZE}}
#define ENTRY_HOOK       {{ENTRY_HOOK}}
#define ENTRY_PRIV       {{ENTRY_PRIV}}
#define OPS_PRIORITY     {{OPS_PRIORITY}}
#define XT_TABLE_NAME    {{XT_TABLE_NAME}}	/* -1: no x_tables in vmlinux's BTF */

BPF_ARRAY(nf_hooks_out, struct kdbg_nf_hooks, 1);

int kdbg_nf_hooks(struct bpf_raw_tracepoint_args *ctx)
{
	int zero = 0;
	struct kdbg_nf_hooks *out = nf_hooks_out.lookup(&zero);
	__u64 slot = ctx->args[0], net, entries, orig;
	__u16 num = 0;
	__u32 i;

	if (!out)
		return 0;
	/* (no memset: a 2 KB one is a call bcc cannot make; what is not set below is
	 * past "copied") */
	out->net = out->entries = 0;
	out->inum = out->num = out->copied = 0;
	out->err = 0;
	net = read_ptr(read_ptr(bpf_get_current_task(), TASK_NSPROXY), NSPROXY_NET);
	if (!net) {
		out->err = KDBG_NF_ERR_NET;
		return 0;
	}
	out->net = net;
	bpf_probe_read_kernel(&out->inum, sizeof(out->inum), (void *)(net + NET_INUM));
	entries = read_ptr(net, slot);
	out->entries = entries;
	if (!entries)
		return 0;
	if (bpf_probe_read_kernel(&num, sizeof(num), (void *)(entries + ENTRIES_NUM))) {
		out->err = KDBG_NF_ERR_ENTRIES;
		return 0;
	}
	out->num = num;
	orig = entries + ENTRIES_HOOKS + (__u64)num * ENTRY_SIZE;
	for (i = 0; i < KDBG_NF_HOOKS_MAX && i < num; i++) {
		struct kdbg_nf_hook *h = &out->hooks[i];
		__u64 entry = entries + ENTRIES_HOOKS + (__u64)i * ENTRY_SIZE;

		h->fn = read_ptr(entry, ENTRY_HOOK);
		h->priv = read_ptr(entry, ENTRY_PRIV);
		h->ops = read_ptr(orig + (__u64)i * 8, 0);
		h->priority = 0;
		h->table[0] = 0;
		if (h->ops)
			bpf_probe_read_kernel(&h->priority, sizeof(h->priority),
					      (void *)(h->ops + OPS_PRIORITY));
		/* read for every entry (a faulting read leaves it empty); user space keeps
		 * it only for x_tables' functions, whose priv is an xt_table */
		if (XT_TABLE_NAME >= 0 && h->priv)
			bpf_probe_read_kernel_str(h->table, sizeof(h->table),
						  (void *)(h->priv + XT_TABLE_NAME));
		out->copied = i + 1;
	}
	return 0;
}
