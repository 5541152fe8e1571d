"""The wire: what travels between a client and a kernel.

Jupyter messages and their signing (``session``), connection info and files
(``connection``), ZeroMQ sockets (``transport``) and the counting of dropped messages
(``droplog``). It knows nothing of managers, plugins or a kernel's life.
"""
