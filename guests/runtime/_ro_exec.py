"""Exec a program with one directory made read-only (``SRC -- PROGRAM ARGS...``).

Run under ``unshare --mount --propagation private``: the read-only bind
mount exists only in that private mount namespace, so the host never sees
it and nothing is left to unmount when the program exits. Debian 12's C
virtiofsd has no read-only option; started this way, its shared directory
(and the bind mount it makes of it for its sandbox, which copies the
read-only flag) refuses every write with EROFS, whatever the guest mounts.

Standalone on purpose (stdlib only, run by file path): it runs before the
program it wraps and must not depend on the project's import path.
"""

import os
import subprocess
import sys


def main(args: list[str]) -> int:
    if len(args) < 3 or args[1] != "--":
        print("usage: _ro_exec.py DIR -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    source, argv = args[0], args[2:]
    for mount in (["mount", "--bind", source, source], ["mount", "-o", "remount,bind,ro", source]):
        done = subprocess.run(mount, stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            print(f"_ro_exec: {' '.join(mount)} failed ({done.returncode})", file=sys.stderr)
            return 1
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
