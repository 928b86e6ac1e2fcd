"""Process launcher of the local backend, run as a script (`python -I -S launch.py JSON`).

It puts itself into the kernel's limits, then execs the kernel's argv, so the
kernel process *is* this process: CPU affinity, memory cgroup (or an address
space rlimit), working directory, no inherited descriptors beyond 0-2. When the
exec fails it writes the reason to the status descriptor (if one is given) and
exits 127; a successful exec closes that descriptor with nothing written.
Imports only the standard library: it must start fast and know nothing else.
"""

import json
import os
import resource
import sys


def main() -> None:
    plan = json.loads(sys.argv[1])
    status_fd = plan.get("status_fd")
    try:
        if plan.get("cores"):
            os.sched_setaffinity(0, plan["cores"])
        if plan.get("cgroup"):
            with open(os.path.join(plan["cgroup"], "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        if plan.get("rlimit_as"):
            limit = int(plan["rlimit_as"])
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        os.chdir(plan["cwd"])
        keep = {0, 1, 2} | ({status_fd} if status_fd is not None else set())
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep:
                try:  # noqa: SIM105 -- no contextlib import: the launcher starts bare
                    os.close(fd)
                except OSError:
                    pass
        if status_fd is not None:
            os.set_inheritable(status_fd, False)
        argv = plan["argv"]
        os.execvp(argv[0], argv)
    except OSError as exc:
        message = f"{plan['argv'][0] if plan.get('argv') else 'launch'}: {exc.strerror or exc}"
        if status_fd is not None:
            os.write(status_fd, message.encode())
        else:
            os.write(2, (message + "\n").encode())
        os._exit(127)


if __name__ == "__main__":
    main()
