"""The contract between the core, plugins and hosts.

The hook specs (:mod:`kernel_hub.hookspecs` is their public path), the frozen value types
plugins hand over, the ``KernelManager`` ABC, the error hierarchy and the events. Every other
part of kernel_hub stands on this folder; it stands on nothing of kernel_hub.
"""
