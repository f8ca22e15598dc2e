"""kdbg's commands at gdb's prompt, the part that needs no gdb: the state file kdbg
writes before it hands over the prompt (``state``), and the text of ``kdbg-skb``
(``skbview``), ``kdbg-rule`` (``nftframe``), ``kdbg-where`` (``where``), ``help kdbg``
(``helplist``) and kdbg's ``lx-symbols`` (``modsyms``). The helpers in ``gdb/``
(``gdb/kdbg_prompt.py`` and the modules it loads) read the kernel through gdb and
print through these. Every module here imports only the standard library and
``symbols``/``trace``, because gdb's own Python (Debian's python3, no venv) imports them.
"""
