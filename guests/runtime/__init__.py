"""Django-free runtime for imageless guests: QEMU, virtiofsd, QMP.

Groundwork for the guests issue, modelled on nixpkgs' NixOS test driver:
building a command line is kept apart from owning the process that runs it.

* :mod:`.bootspec` reads a build's ``boot.json`` (init, initrd).
* :mod:`.qemu` turns a typed :class:`~.qemu.GuestSpec` into QEMU's argv
  (pure: no file system, no processes) and names a guest's run-dir files.
* :mod:`.virtiofsd` builds the C virtiofsd's argv and owns one instance.
* :mod:`.process` starts a process in a session of its own (so an RQ job's
  process-group kill cannot take it down), with a pid file for re-adoption.
* :mod:`.qmp` is a small synchronous QMP client with an event queue.
* :mod:`.accel` finds out whether KVM really works here, else TCG.

Nothing here imports Django; callers pass plain values in and get plain
values (or a clear exception) back.
"""
