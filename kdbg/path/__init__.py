"""``kdbg path``: follow packets across interfaces and network namespaces.

``program`` builds the BPF text, ``probe`` loads it, ``event`` decodes its
records into :class:`~kdbg.path.event.Hop` and :class:`~kdbg.path.event.End`,
``report`` presents them, and ``tracer`` ties it together over the tracers' one
loop (:mod:`kdbg.trace.loop`), with the stop conditions of ``kdbg watch``.
"""
