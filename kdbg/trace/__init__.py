"""The drop tracer: bcc on ``skb:kfree_skb``, filters in the kernel, one decode."""
