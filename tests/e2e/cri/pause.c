/* The pod sandbox's process for the CRI tests: holds the pod's namespaces until it is told
 * to stop (SIGTERM or SIGINT), then exits 0. Children it inherits as a pod's init are
 * reaped so that none stays a zombie. Built with gcc -static at test time. */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;

static void stop(int signal_number)
{
	(void)signal_number;
	stopping = 1;
}

static void reap(int signal_number)
{
	(void)signal_number;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(void)
{
	struct sigaction action = { 0 };
	sigset_t blocked, waiting;

	action.sa_handler = stop;
	sigaction(SIGTERM, &action, NULL);
	sigaction(SIGINT, &action, NULL);
	action.sa_handler = reap;
	action.sa_flags = SA_NOCLDSTOP;
	sigaction(SIGCHLD, &action, NULL);

	/* blocked between the check and sigsuspend, so a stop in that window is not lost */
	sigemptyset(&blocked);
	sigaddset(&blocked, SIGTERM);
	sigaddset(&blocked, SIGINT);
	sigprocmask(SIG_BLOCK, &blocked, &waiting);
	while (!stopping)
		sigsuspend(&waiting);
	return 0;
}
