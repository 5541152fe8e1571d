"""Kernel managers, and what they stand on.

A local process in its own group (``subproc``), the host side of a nanny (``remote``) and
its local launcher (``local_nanny``), the reaper that outlives a killed host (``reaper``),
and process helpers (``procs``, ``liveness``, ``argv``). The ABC is
:class:`kernel_hub.KernelManager`, in the contract.
"""
