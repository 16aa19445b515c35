/*
 * The Enclave Runtime PAL ABI (versions 1 to 3), as rune calls it, and the parts of the
 * skeleton shared by its three builds.
 *
 * Every entry point returns 0 on success and a negative errno value on failure.
 */
#ifndef INCLAVARE_SKELETON_H
#define INCLAVARE_SKELETON_H

#include <stdint.h>
#include <sys/types.h>

/* pal_init's argument in versions 1 and 2. */
struct pal_attr_v1 {
	const char *args;      /* ENCLAVE_RUNTIME_ARGS, comma separated */
	const char *log_level; /* ENCLAVE_RUNTIME_LOGLEVEL */
};

/* pal_init's argument in version 3: the enclave rune launched for this PAL, if any. */
struct pal_attr_v3 {
	struct pal_attr_v1 attr_v1;
	int fd;        /* the launch record of the enclave, or -1 */
	uint64_t addr; /* the enclave's base address (0 for the simulated TEE) */
};

struct pal_stdio_fds {
	int stdin_fd, stdout_fd, stderr_fd; /* -1: keep the PAL's own */
};

/* pal_create_process's argument (versions 2 and 3). */
struct pal_create_process_args {
	const char *path;
	char *const *argv; /* NULL-terminated */
	char *const *env;  /* NULL-terminated */
	const struct pal_stdio_fds *stdio;
	int *pid;          /* out */
};

/* pal_exec's argument (versions 2 and 3): wait for a process to end. */
struct pal_exec_args {
	int pid;
	int *exit_value; /* out: exit status, or 128 + signal number */
};

/* The entry points an injected failure can be asked for (args "fail=NAME", "crash=NAME"). */
enum skeleton_entry {
	ENTRY_INIT,
	ENTRY_CREATE_PROCESS,
	ENTRY_EXEC,
	ENTRY_KILL,
	ENTRY_GET_LOCAL_REPORT,
	ENTRY_DESTROY,
	ENTRY_NONE,
};

int skeleton_init(const char *args, const char *log_level);
int skeleton_injected(enum skeleton_entry entry);
int skeleton_create_process(const char *path, char *const argv[], char *const env[],
			    const struct pal_stdio_fds *stdio, pid_t *pid);
int skeleton_wait(pid_t pid, int *exit_value);
int skeleton_kill(pid_t pid, int sig);
pid_t skeleton_last_process(void);
int skeleton_destroy(void);
void skeleton_log(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* Local reports of the simulated TEE (report.c, version 3 only). */
#define SIM_LAUNCH_RECORD_SIZE 4192
#define SGX_TARGET_INFO_SIZE 512
#define SGX_REPORT_DATA_SIZE 64
#define SGX_REPORT_SIZE 432

int sim_load_launch_record(int fd);
int sim_local_report(const void *target_info, int target_info_len, void *report,
		     int *report_len);
void sim_forget_launch_record(void);

#endif
