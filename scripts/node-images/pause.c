/* The node tests' sandbox ("pause") process: holds a pod's namespaces and exits on SIGTERM or
 * SIGINT. Built statically by scripts/peers.sh into a local OCI image, because no image
 * registry is reachable from the test machines. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  signal(SIGTERM, stop);
  signal(SIGINT, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
  return 0;
}
