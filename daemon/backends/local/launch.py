"""The Python fallback of the native launcher (`launcher.c`), run as a script.

`python -I -S launch.py OPTIONS -- ARGV...` takes launcher.c's command line and
does the same steps in the same order (join cgroups, affinity, rlimits, working
directory, uid and gid, signals, descriptors), then execs argv, so the kernel
process *is* this process. Used only where the native launcher is not built;
it costs a Python start per kernel process (15-50 ms). Unlike launcher.c it
cannot reset the two signals the C library reserves (32, 33) if they were
ignored. On failure it writes the reason to the status descriptor (else
stderr) and exits 127. Imports only the standard library, all of it before
dropping privileges (the interpreter's files may be out of the kernel's
reach): it must start fast and know nothing else.
"""

import os
import resource
import signal
import sys
import warnings  # noqa: F401 -- os.execvp imports it; after setuid it may be out of reach


def fail(message: str, status_fd: int | None) -> None:
    if status_fd is not None:
        os.write(status_fd, message.encode())
    else:
        os.write(2, (message + "\n").encode())
    os._exit(127)


def main() -> None:
    args = sys.argv[1:]
    opts: dict[str, list[str]] = {}
    while args and args[0] != "--":
        flag = args.pop(0)
        if len(flag) != 2 or flag[0] != "-" or not args:
            fail(f"launcher: bad option {flag}", None)
        opts.setdefault(flag[1], []).append(args.pop(0))
    argv = args[1:]
    status_fd = int(opts["s"][-1]) if "s" in opts else None
    step = "launcher"
    try:
        if not argv:
            fail("launcher: no command", status_fd)
        pid = str(os.getpid())
        for procs in opts.get("j", []):
            step = f"joining cgroup {procs}"
            with open(procs, "w") as f:
                f.write(pid)
        if "c" in opts:
            step = f"setting cpu affinity to {opts['c'][-1]}"
            os.sched_setaffinity(0, [int(c) for c in opts["c"][-1].split(",")])
        if "m" in opts:
            step = "setting RLIMIT_AS"
            limit = int(opts["m"][-1])
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if "n" in opts:
            step = "setting RLIMIT_NPROC"
            limit = int(opts["n"][-1])
            resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
        if "d" in opts:
            step = f"entering {opts['d'][-1]}"
            os.chdir(opts["d"][-1])
        if "u" in opts:
            uid, gid = int(opts["u"][-1]), int(opts["g"][-1])
            step = "dropping supplementary groups"
            os.setgroups([])
            step = "setting gid"
            os.setresgid(gid, gid, gid)
            step = "setting uid"
            os.setresuid(uid, uid, uid)
            if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
                fail("launcher: uid/gid did not change", status_fd)
        for sig in signal.valid_signals():
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                try:  # noqa: SIM105 -- no contextlib import: the launcher starts bare
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd > 2:
                try:  # noqa: SIM105
                    os.set_inheritable(fd, False)
                except OSError:
                    pass
        step = argv[0]
        os.execvp(argv[0], argv)
    except OSError as exc:
        fail(f"{step}: {exc.strerror or exc}", status_fd)
    except (ValueError, KeyError) as exc:
        fail(f"launcher: bad option value ({exc})", status_fd)


if __name__ == "__main__":
    main()
