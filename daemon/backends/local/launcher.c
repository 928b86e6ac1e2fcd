/*
 * agenthost-launch: the native launcher every process of a local kernel starts through.
 *
 * The daemon spawns it (posix_spawn, in a new session, with stdio already in
 * place and the kernel's environment) with a plan on its command line; it puts
 * itself into the kernel's limits and then execs the kernel's argv, so the
 * kernel process *is* this process. In order, each step as root where root is
 * needed:
 *
 *   -j FILE   join a cgroup: write our pid to FILE (a cgroup.procs), repeatable;
 *             first, so that every later fork is counted and confined
 *   -c LIST   CPU affinity, e.g. "0,2,3" (a cpuset cgroup, if joined, enforces it)
 *   -m BYTES  RLIMIT_AS (memory when no memory cgroup is writable)
 *   -n N      RLIMIT_NPROC (processes of the kernel's own uid when no pids cgroup is)
 *   -d DIR    working directory (entered before dropping privileges: DIR's
 *             parents need not be searchable by the kernel's uid)
 *   -u UID    setgroups(none), setresgid(GID), setresuid(UID); checked afterwards
 *   -g GID    (with -u)
 *             then: signal dispositions to default, signal mask empty,
 *             every descriptor above 2 close-on-exec, exec argv (PATH search)
 *   -s FD     status descriptor: on failure the reason is written there and the
 *             launcher exits 127; a successful exec closes it with nothing
 *             written. Without -s the reason goes to stderr.
 *   -V        print "agenthost-launch PROTOCOL SOURCE" and exit (the daemon checks
 *             it once, so a stale build is never used)
 *
 * It knows nothing of agents, kernels or the daemon: only these steps. It
 * allocates nothing and starts in well under a millisecond (static build).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

/* Bump with every change of the command line above (launcher.py checks it). */
#define PROTOCOL 1
#ifndef AGENTHOST_LAUNCHER_SOURCE
#define AGENTHOST_LAUNCHER_SOURCE "unknown"
#endif
#define MAX_CGROUPS 8
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static int status_fd = -1;

/* Report "what: reason" on the status descriptor (or stderr) and exit 127. */
static void fail(const char *what, const char *detail, int err) {
    char message[PATH_MAX + 256];
    int n;
    if (err)
        n = snprintf(message, sizeof message, "%s%s%s: %s", what, detail ? " " : "",
                     detail ? detail : "", strerror(err));
    else
        n = snprintf(message, sizeof message, "%s%s%s", what, detail ? " " : "",
                     detail ? detail : "");
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof message)
        n = sizeof message - 1;
    int fd = status_fd >= 0 ? status_fd : 2;
    if (status_fd < 0)
        message[n++] = '\n';
    ssize_t written = write(fd, message, (size_t)n);
    (void)written;
    _exit(127);
}

static unsigned long long number(const char *text, const char *what) {
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || *text == '\0' || *end != '\0' || *text == '-')
        fail("launcher: not a number for", what, 0);
    return value;
}

static void join_cgroup(const char *procs) {
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d", (int)getpid());
    int fd = open(procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        fail("joining cgroup", procs, errno);
    if (write(fd, pid, (size_t)n) != n)
        fail("joining cgroup", procs, errno);
    close(fd);
}

static void set_affinity(const char *list) {
    cpu_set_t set;
    CPU_ZERO(&set);
    char copy[1024];
    if (strlen(list) >= sizeof copy)
        fail("launcher: cpu list too long:", list, 0);
    strcpy(copy, list);
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        unsigned long long cpu = number(item, "-c");
        if (cpu >= CPU_SETSIZE)
            fail("launcher: cpu out of range:", item, 0);
        CPU_SET((int)cpu, &set);
    }
    if (sched_setaffinity(0, sizeof set, &set) < 0)
        fail("setting cpu affinity to", list, errno);
}

static void set_limit(int resource, unsigned long long value, const char *what) {
    struct rlimit limit = {.rlim_cur = (rlim_t)value, .rlim_max = (rlim_t)value};
    if (setrlimit(resource, &limit) < 0)
        fail("setting", what, errno);
}

static void become(uid_t uid, gid_t gid) {
    if (setgroups(0, NULL) < 0)
        fail("dropping supplementary groups", NULL, errno);
    if (setresgid(gid, gid, gid) < 0)
        fail("setting gid", NULL, errno);
    if (setresuid(uid, uid, uid) < 0)
        fail("setting uid", NULL, errno);
    uid_t r, e, s;
    gid_t rg, eg, sg;
    if (getresuid(&r, &e, &s) < 0 || r != uid || e != uid || s != uid ||
        getresgid(&rg, &eg, &sg) < 0 || rg != gid || eg != gid || sg != gid)
        fail("launcher: uid/gid did not change", NULL, 0);
}

/* The kernel's own sigaction: the C library refuses the signals it reserves (32, 33). */
struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    unsigned long mask;
};

static void reset_signals(void) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    struct kernel_sigaction raw = {SIG_DFL, 0, NULL, 0};
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        /* An ignored signal stays ignored across exec: every one goes back to default. */
        if (sigaction(sig, &dfl, NULL) < 0)
            syscall(SYS_rt_sigaction, sig, &raw, NULL, sizeof raw.mask);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void descriptors_cloexec(void) {
    /* Everything above 2 closes at exec, the status descriptor included. */
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return;
    for (int fd = 3; fd < 1024; fd++)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
}

int main(int argc, char **argv) {
    const char *cgroups[MAX_CGROUPS];
    int n_cgroups = 0;
    const char *cpus = NULL, *dir = NULL;
    unsigned long long rlimit_as = 0, rlimit_nproc = 0;
    int has_as = 0, has_nproc = 0, has_uid = 0, has_gid = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    int opt;
    while ((opt = getopt(argc, argv, "+s:j:c:m:n:d:u:g:V")) != -1) {
        switch (opt) {
        case 's':
            status_fd = (int)number(optarg, "-s");
            break;
        case 'j':
            if (n_cgroups == MAX_CGROUPS)
                fail("launcher: too many cgroups", NULL, 0);
            cgroups[n_cgroups++] = optarg;
            break;
        case 'c':
            cpus = optarg;
            break;
        case 'm':
            rlimit_as = number(optarg, "-m");
            has_as = 1;
            break;
        case 'n':
            rlimit_nproc = number(optarg, "-n");
            has_nproc = 1;
            break;
        case 'd':
            dir = optarg;
            break;
        case 'u':
            uid = (uid_t)number(optarg, "-u");
            has_uid = 1;
            break;
        case 'g':
            gid = (gid_t)number(optarg, "-g");
            has_gid = 1;
            break;
        case 'V':
            printf("agenthost-launch %d %s\n", PROTOCOL, AGENTHOST_LAUNCHER_SOURCE);
            return 0;
        default:
            fail("launcher: bad option", NULL, 0);
        }
    }
    if (has_uid != has_gid)
        fail("launcher: -u and -g go together", NULL, 0);
    if (optind >= argc)
        fail("launcher: no command", NULL, 0);
    for (int i = 0; i < n_cgroups; i++)
        join_cgroup(cgroups[i]);
    if (cpus)
        set_affinity(cpus);
    if (has_as)
        set_limit(RLIMIT_AS, rlimit_as, "RLIMIT_AS");
    if (has_nproc)
        set_limit(RLIMIT_NPROC, rlimit_nproc, "RLIMIT_NPROC");
    if (dir && chdir(dir) < 0)
        fail("entering", dir, errno);
    if (has_uid)
        become(uid, gid);
    reset_signals();
    descriptors_cloexec();
    execvp(argv[optind], &argv[optind]);
    fail(argv[optind], NULL, errno);
    return 127;
}
