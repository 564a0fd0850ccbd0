/* measure: runs one benchmark process and reports its wall time and peak RSS.
 *
 * usage: measure PRELOAD LOG TIMEOUT_S PROGRAM [ARGS...]
 *   PRELOAD    the library to put in LD_PRELOAD for the child, or "-" for none (glibc);
 *   LOG        the file that receives the child's stdout and stderr;
 *   TIMEOUT_S  seconds after which the child is killed (a hung allocator fails, it does not
 *              stall the runner).
 * Prints one line: "WALL_SECONDS MAXRSS_KIB STATUS", where STATUS is the child's exit code,
 * 128 + the signal that killed it, or 124 when it was killed for the timeout. The peak RSS is
 * wait4's ru_maxrss of the child (this process's own, small RSS is not counted). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t timed_out;
static volatile pid_t child;

static void on_alarm(int sig)
{
    (void)sig;
    timed_out = 1;
    if (child > 0) kill(child, SIGKILL);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: measure PRELOAD LOG TIMEOUT_S PROGRAM [ARGS...]\n");
        return 64;
    }
    const char *preload = argv[1], *log = argv[2];
    unsigned timeout = (unsigned)strtoul(argv[3], NULL, 10);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("measure: fork");
        return 1;
    }
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) {
            perror("measure: log");
            _exit(126);
        }
        close(fd);
        if (strcmp(preload, "-") == 0)
            unsetenv("LD_PRELOAD");
        else
            setenv("LD_PRELOAD", preload, 1);
        execv(argv[4], &argv[4]);
        perror("measure: exec");
        _exit(127);
    }
    child = pid;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    if (timeout > 0) alarm(timeout);
    int status;
    struct rusage ru;
    pid_t got;
    do {
        got = wait4(pid, &status, 0, &ru);
    } while (got < 0 && errno == EINTR);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    alarm(0);
    if (got < 0) {
        perror("measure: wait4");
        return 1;
    }
    int code;
    if (timed_out)
        code = 124;
    else if (WIFEXITED(status))
        code = WEXITSTATUS(status);
    else
        code = 128 + WTERMSIG(status);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("%.4f %ld %d\n", wall, ru.ru_maxrss, code);
    return 0;
}
