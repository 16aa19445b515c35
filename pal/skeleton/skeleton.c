/*
 * liberpal-skeleton: the sample enclave runtime of the PAL ABI.
 *
 * It runs the payload as an ordinary child process, with the argv, environment and stdio it
 * is given, waits for it and signals it. Built three times (PAL_VERSION 1, 2, 3), each build
 * exporting the entry points of its ABI version only. Version 3 also answers
 * pal_get_local_report with a report of the simulated TEE (report.c).
 *
 * Arguments (ENCLAVE_RUNTIME_ARGS, comma separated):
 *   debug         log each call on standard error
 *   fail=NAME     entry point NAME returns -EINVAL (NAME: init, create_process, exec, kill,
 *                 get_local_report, destroy); for testing how rune handles a failing PAL
 *   crash=NAME    entry point NAME aborts the process; for testing a crashing PAL
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "skeleton.h"

#ifndef PAL_VERSION
#error "build with -DPAL_VERSION=1, 2 or 3"
#endif

#define EXPORT __attribute__((visibility("default")))
#define MAX_PROCESSES 256

extern char **environ;

static int initialized;
static int debugging;
static enum skeleton_entry failing = ENTRY_NONE;
static enum skeleton_entry crashing = ENTRY_NONE;

/* The processes this PAL started and has not yet waited for: only they may be signalled. */
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t processes[MAX_PROCESSES];
static pid_t last_process = -1;

static const char *const entry_names[] = {
	[ENTRY_INIT] = "init",
	[ENTRY_CREATE_PROCESS] = "create_process",
	[ENTRY_EXEC] = "exec",
	[ENTRY_KILL] = "kill",
	[ENTRY_GET_LOCAL_REPORT] = "get_local_report",
	[ENTRY_DESTROY] = "destroy",
};

void skeleton_log(const char *format, ...)
{
	va_list args;

	if (!debugging)
		return;
	va_start(args, format);
	fputs("skeleton: ", stderr);
	vfprintf(stderr, format, args);
	fputc('\n', stderr);
	va_end(args);
}

static enum skeleton_entry entry_named(const char *name, size_t length)
{
	for (int entry = 0; entry < ENTRY_NONE; entry++) {
		if (strlen(entry_names[entry]) == length &&
		    strncmp(entry_names[entry], name, length) == 0)
			return (enum skeleton_entry)entry;
	}
	return ENTRY_NONE;
}

/* Parse "debug,fail=exec" and the like; an unknown argument is an error. */
static int parse_args(const char *args)
{
	const char *cursor = args ? args : "";

	debugging = 0;
	failing = crashing = ENTRY_NONE;
	while (*cursor) {
		const char *end = strchrnul(cursor, ',');
		size_t length = (size_t)(end - cursor);

		if (length == 5 && strncmp(cursor, "debug", 5) == 0) {
			debugging = 1;
		} else if (length > 5 && strncmp(cursor, "fail=", 5) == 0) {
			failing = entry_named(cursor + 5, length - 5);
			if (failing == ENTRY_NONE)
				goto unknown;
		} else if (length > 6 && strncmp(cursor, "crash=", 6) == 0) {
			crashing = entry_named(cursor + 6, length - 6);
			if (crashing == ENTRY_NONE)
				goto unknown;
		} else if (length != 0) {
			goto unknown;
		}
		cursor = *end ? end + 1 : end;
		continue;
unknown:
		fprintf(stderr, "skeleton: unknown argument '%.*s' (known: debug, fail=NAME, "
			"crash=NAME)\n", (int)length, cursor);
		return -EINVAL;
	}
	return 0;
}

int skeleton_injected(enum skeleton_entry entry)
{
	if (crashing == entry) {
		fprintf(stderr, "skeleton: crashing in %s, as asked\n", entry_names[entry]);
		abort();
	}
	if (failing == entry) {
		fprintf(stderr, "skeleton: failing in %s, as asked\n", entry_names[entry]);
		return -EINVAL;
	}
	return 0;
}

int skeleton_init(const char *args, const char *log_level)
{
	int ret = parse_args(args);

	if (ret)
		return ret;
	if (log_level && strcmp(log_level, "debug") == 0)
		debugging = 1;
	skeleton_log("pal_init (API version %d, args \"%s\")", PAL_VERSION, args ? args : "");
	ret = skeleton_injected(ENTRY_INIT);
	if (ret)
		return ret;
	initialized = 1;
	return 0;
}

static int remember(pid_t pid)
{
	int ret = -EAGAIN;

	pthread_mutex_lock(&table_lock);
	for (int i = 0; i < MAX_PROCESSES; i++) {
		if (processes[i] == 0) {
			processes[i] = pid;
			last_process = pid;
			ret = 0;
			break;
		}
	}
	pthread_mutex_unlock(&table_lock);
	return ret;
}

static int is_ours(pid_t pid, int forget)
{
	int found = 0;

	pthread_mutex_lock(&table_lock);
	for (int i = 0; i < MAX_PROCESSES; i++) {
		if (pid > 0 && processes[i] == pid) {
			found = 1;
			if (forget)
				processes[i] = 0;
			break;
		}
	}
	pthread_mutex_unlock(&table_lock);
	return found;
}

pid_t skeleton_last_process(void)
{
	pid_t pid;

	pthread_mutex_lock(&table_lock);
	pid = last_process;
	pthread_mutex_unlock(&table_lock);
	return pid;
}

/* In the child, before execve: only async-signal-safe calls. Returns 0 or an errno. */
static int place_stdio(const struct pal_stdio_fds *stdio)
{
	int given[3] = { -1, -1, -1 };

	if (stdio) {
		given[0] = stdio->stdin_fd;
		given[1] = stdio->stdout_fd;
		given[2] = stdio->stderr_fd;
	}
	/* Move the given descriptors out of the way first, so that they may overlap 0-2. */
	for (int i = 0; i < 3; i++) {
		if (given[i] >= 0 && (given[i] = fcntl(given[i], F_DUPFD_CLOEXEC, 10)) < 0)
			return errno;
	}
	for (int i = 0; i < 3; i++) {
		if (given[i] >= 0 && dup2(given[i], i) < 0)
			return errno;
	}
	return 0;
}

/*
 * The payload starts with default dispositions and nothing blocked, whatever its caller set.
 * The raw system calls reach the two real-time signals the C library keeps for itself, which
 * sigaction() refuses to change; an ignored one would survive execve.
 */
struct kernel_sigaction {
	void *handler;
	unsigned long flags;
	void *restorer;
	unsigned long mask;
};

static void reset_signals(void)
{
	struct kernel_sigaction default_action;
	unsigned long none = 0;

	memset(&default_action, 0, sizeof(default_action));
	for (int sig = 1; sig <= 64; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		syscall(SYS_rt_sigaction, sig, &default_action, NULL, sizeof(unsigned long));
	}
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof(unsigned long));
}

int skeleton_create_process(const char *path, char *const argv[], char *const env[],
			    const struct pal_stdio_fds *stdio, pid_t *pid)
{
	int report[2];
	int child_errno = 0;
	pid_t child;
	ssize_t got;

	if (!initialized) {
		fprintf(stderr, "skeleton: pal_init was not called\n");
		return -EINVAL;
	}
	if (!path || !argv || !pid)
		return -EINVAL;
	/* The child tells, through this pipe, why execve failed; it closes on success. */
	if (pipe2(report, O_CLOEXEC) < 0)
		return -errno;
	child = fork();
	if (child < 0) {
		int saved = errno;

		close(report[0]);
		close(report[1]);
		return -saved;
	}
	if (child == 0) {
		close(report[0]);
		reset_signals();
		child_errno = place_stdio(stdio);
		if (child_errno == 0) {
			execve(path, argv, env ? env : environ);
			child_errno = errno;
		}
		if (write(report[1], &child_errno, sizeof(child_errno)) < 0)
			_exit(127);
		_exit(127);
	}
	close(report[1]);
	do {
		got = read(report[0], &child_errno, sizeof(child_errno));
	} while (got < 0 && errno == EINTR);
	close(report[0]);
	if (got == (ssize_t)sizeof(child_errno)) {
		waitpid(child, NULL, 0);
		fprintf(stderr, "skeleton: cannot start %s: %s\n", path, strerror(child_errno));
		return -child_errno;
	}
	if (remember(child) < 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		return -EAGAIN;
	}
	skeleton_log("started %s as process %d", path, (int)child);
	*pid = child;
	return 0;
}

int skeleton_wait(pid_t pid, int *exit_value)
{
	int status;
	pid_t done;

	if (!exit_value)
		return -EINVAL;
	if (!is_ours(pid, 0))
		return -ESRCH;
	do {
		done = waitpid(pid, &status, 0);
	} while (done < 0 && errno == EINTR);
	if (done < 0)
		return -errno;
	is_ours(pid, 1);
	if (WIFEXITED(status))
		*exit_value = WEXITSTATUS(status);
	else
		*exit_value = 128 + WTERMSIG(status);
	skeleton_log("process %d ended with %d", (int)pid, *exit_value);
	return 0;
}

int skeleton_kill(pid_t pid, int sig)
{
	if (!is_ours(pid, 0))
		return -ESRCH;
	skeleton_log("signal %d to process %d", sig, (int)pid);
	if (kill(pid, sig) < 0)
		return -errno;
	return 0;
}

int skeleton_destroy(void)
{
	skeleton_log("pal_destroy");
	initialized = 0;
#if PAL_VERSION >= 3
	sim_forget_launch_record();
#endif
	return 0;
}

/* ---- the exported entry points ------------------------------------------------------- */

EXPORT int pal_get_version(void)
{
	return PAL_VERSION;
}

#if PAL_VERSION < 3
EXPORT int pal_init(const struct pal_attr_v1 *attr)
{
	if (!attr)
		return -EINVAL;
	return skeleton_init(attr->args, attr->log_level);
}
#else
EXPORT int pal_init(const struct pal_attr_v3 *attr)
{
	int ret;

	if (!attr)
		return -EINVAL;
	ret = skeleton_init(attr->attr_v1.args, attr->attr_v1.log_level);
	if (ret)
		return ret;
	if (attr->fd >= 0)
		return sim_load_launch_record(attr->fd);
	skeleton_log("no enclave was launched for this PAL: no local reports");
	return 0;
}
#endif

#if PAL_VERSION == 1
/* Version 1 runs the payload to its end in one call; the environment is the caller's. */
EXPORT int pal_exec(const char *path, char *const argv[], const struct pal_stdio_fds *stdio,
		    int *exit_code)
{
	pid_t pid;
	int ret = skeleton_injected(ENTRY_EXEC);

	if (ret)
		return ret;
	ret = skeleton_create_process(path, argv, environ, stdio, &pid);
	if (ret)
		return ret;
	return skeleton_wait(pid, exit_code);
}

/* Version 1's kill takes the signal first; pid 0 means the payload pal_exec is running. */
EXPORT int pal_kill(int sig, int pid)
{
	int ret = skeleton_injected(ENTRY_KILL);

	if (ret)
		return ret;
	return skeleton_kill(pid == 0 ? skeleton_last_process() : pid, sig);
}
#else
EXPORT int pal_create_process(const struct pal_create_process_args *args)
{
	pid_t pid;
	int ret = skeleton_injected(ENTRY_CREATE_PROCESS);

	if (ret)
		return ret;
	if (!args || !args->pid)
		return -EINVAL;
	ret = skeleton_create_process(args->path, args->argv, args->env, args->stdio, &pid);
	if (ret == 0)
		*args->pid = pid;
	return ret;
}

EXPORT int pal_exec(const struct pal_exec_args *args)
{
	int ret = skeleton_injected(ENTRY_EXEC);

	if (ret)
		return ret;
	if (!args)
		return -EINVAL;
	return skeleton_wait(args->pid, args->exit_value);
}

EXPORT int pal_kill(int pid, int sig)
{
	int ret = skeleton_injected(ENTRY_KILL);

	if (ret)
		return ret;
	return skeleton_kill(pid, sig);
}
#endif

#if PAL_VERSION >= 3
EXPORT int pal_get_local_report(const void *target_info, int target_info_len, void *report,
				int *report_len)
{
	int ret = skeleton_injected(ENTRY_GET_LOCAL_REPORT);

	if (ret)
		return ret;
	return sim_local_report(target_info, target_info_len, report, report_len);
}
#endif

EXPORT int pal_destroy(void)
{
	int ret = skeleton_injected(ENTRY_DESTROY);

	if (ret)
		return ret;
	return skeleton_destroy();
}
