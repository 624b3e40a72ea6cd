"""Django-free runtime for imageless guests: QEMU, virtiofsd, QMP.

Groundwork for the guests issue, modelled on nixpkgs' NixOS test driver:
building a command line is kept apart from owning the process that runs it.

* :mod:`.bootspec` reads a build's ``boot.json`` (init, initrd).
* :mod:`.kernel` finds Debian's kernels and tells whether a kernel has
  what a real imageless guest needs built in.
* :mod:`.qemu` turns a typed :class:`~.qemu.GuestSpec` into QEMU's argv
  (pure: no file system, no processes) and names a guest's run-dir files.
* :mod:`.virtiofsd` builds the C virtiofsd's argv and owns one instance.
* :mod:`.process` starts a process in a session of its own (so an RQ job's
  process-group kill cannot take it down), with a pid file for re-adoption.
* :mod:`.launch` starts a guest (virtiofsd first, then QEMU, all undone
  on failure) and adopts one an earlier owner started.
* :mod:`.qmp` is a small synchronous QMP client with an event queue.
* :mod:`.state` is the lifecycle state machine (pure).
* :mod:`.watch` turns QMP events and QEMU's exit (pidfd) into its events.
* :mod:`.accel` finds out whether KVM really works here, else TCG.
* :mod:`.disks` creates and inspects per-guest qcow2 disks.
* :mod:`.shares` keeps a user's share directory under the host's roots.
* :mod:`.libvirt` builds a libvirt guest's domain XML (overlay on the
  store image) and drives it through libvirt-python; :mod:`.libvirt_events`
  turns libvirt's domain events into state-machine events (with reconnects).

Nothing here imports Django; callers pass plain values in and get plain
values (or a clear exception) back.
"""
