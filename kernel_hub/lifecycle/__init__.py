"""A kernel's life: the launch path, the running kernel, its restarter and activity monitor.

``starter`` launches a type and waits until it answers (first launch and every relaunch),
``kernel`` holds one :class:`~kernel_hub.RunningKernel`, the one owner of its status,
``restarter`` applies its restart policy, ``monitor`` follows its execution state.
"""
