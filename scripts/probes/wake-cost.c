// What waking a sleeping thread costs on this machine, on the waker's core and on the other one.
// Two threads (or two processes) pass one byte back and forth over a pair of pipes, so each round
// trip is two wake-ups of a thread that was asleep. Printed per round trip: the wall time, and
// the machine's busy CPU time from /proc/stat (all cores, so what the kernel and the hypervisor's
// exits charge to the guest is in it, and so is anything else running: run it on an idle machine).
//
//   scripts/probes/wake-cost.sh        (compiles this with cc and runs every placement)
//
// Placements: both on core 0; one on core 0 and one on core 1; and left to the scheduler. And, for
// comparison, a system call that wakes nobody and a load that misses the caches.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int to_echo[2], to_caller[2];
static long round_trips;
static int echo_core;

static void pin(int core) {
  if (core < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(core, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    perror("sched_setaffinity");
    exit(1);
  }
}

static void *echo(void *unused) {
  (void)unused;
  pin(echo_core);
  char byte;
  for (long i = 0; i < round_trips; i++) {
    if (read(to_echo[0], &byte, 1) != 1 || write(to_caller[1], &byte, 1) != 1) exit(1);
  }
  return NULL;
}

static double seconds(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec + now.tv_nsec * 1e-9;
}

// Busy and all jiffies of the whole machine (the first line of /proc/stat).
static void machine_jiffies(long long *busy, long long *all) {
  long long v[10] = {0};
  FILE *stat = fopen("/proc/stat", "r");
  if (!stat || fscanf(stat, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2],
                      &v[3], &v[4], &v[5], &v[6], &v[7]) != 8) {
    perror("/proc/stat");
    exit(1);
  }
  fclose(stat);
  *busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];  // user nice system irq softirq steal
  *all = *busy + v[3] + v[4];                        // + idle iowait
}

int main(int argc, char **argv) {
  int memory = argc > 1 && strcmp(argv[1], "memory") == 0;
  if (argc != 5 && !(memory && argc == 6)) {
    fprintf(stderr, "usage: wake-cost threads|processes CALLER_CORE ECHO_CORE ROUND_TRIPS\n");
    fprintf(stderr, "       wake-cost syscalls CORE - CALLS\n");
    fprintf(stderr, "       wake-cost memory CORE -|huge LOADS [MIB]\n");
    fprintf(stderr, "       (a core of -1 leaves that side to the scheduler)\n");
    return 2;
  }
  if (strcmp(argv[1], "syscalls") == 0) {
    // The cost of entering and leaving the kernel alone, with nobody to wake: on a guest whose
    // kernel entries go through the hypervisor it moves with the host's load.
    long calls = atol(argv[4]);
    pin(atoi(argv[2]));
    double started = seconds();
    for (long i = 0; i < calls; i++) syscall(SYS_getppid);
    printf("syscalls  core %-13s %6.2f us per getppid\n", argv[2],
           (seconds() - started) / calls * 1e6);
    return 0;
  }
  if (memory) {
    // A walk through MIB (default 64) MiB in a random cycle, one dependent load at a time: what a
    // cache miss costs. A core's own speed (the harness's machine loop) can hold while this moves
    // with what the host's other guests do to the shared caches and memory. With PAGES "huge" the
    // walk is on 2 MiB pages, so a miss of the TLB costs a walk of the page tables less: against
    // the same walk on 4 KiB pages ("-") that tells the page walk from the load itself. The guest
    // reports a 32 MiB L3, but walks of several sizes found its share of it nearer 4 MiB.
    int huge = strcmp(argv[3], "huge") == 0;
    size_t bytes = (size_t)(argc > 5 ? atol(argv[5]) : 64) << 20;
    size_t slots = bytes / sizeof(size_t);
    size_t *next = huge ? aligned_alloc(2u << 20, bytes) : malloc(bytes);
    if (!next) return 1;
    if (huge && madvise(next, bytes, MADV_HUGEPAGE) != 0) {
      perror("madvise");
      return 1;
    }
    for (size_t i = 0; i < slots; i++) next[i] = i;
    srand(1);
    for (size_t i = slots - 1; i > 0; i--) {  // Sattolo's shuffle: one cycle through every slot
      size_t j = (((size_t)rand() << 31) ^ (size_t)rand()) % i;
      size_t swap = next[i];
      next[i] = next[j];
      next[j] = swap;
    }
    long loads = atol(argv[4]);
    pin(atoi(argv[2]));
    size_t at = 0;
    double started = seconds();
    for (long i = 0; i < loads; i++) at = next[at];
    printf("memory    core %-4s %3zu MiB %-5s %6.1f ns per dependent load (ended at %zu)\n",
           argv[2], bytes >> 20, huge ? "2 MiB" : "4 KiB", (seconds() - started) / loads * 1e9,
           at);
    free(next);
    return 0;
  }
  int processes = strcmp(argv[1], "processes") == 0;
  int caller_core = atoi(argv[2]);
  echo_core = atoi(argv[3]);
  round_trips = atol(argv[4]);
  if (pipe(to_echo) != 0 || pipe(to_caller) != 0) return 1;

  pthread_t thread;
  pid_t child = 0;
  if (processes) {
    child = fork();
    if (child == 0) {
      echo(NULL);
      _exit(0);
    }
  } else if (pthread_create(&thread, NULL, echo, NULL) != 0) {
    return 1;
  }
  pin(caller_core);
  usleep(100000);  // let the echo side reach its first read and sleep

  long long busy_before, all_before, busy_after, all_after;
  machine_jiffies(&busy_before, &all_before);
  double started = seconds();
  char byte = 'x';
  for (long i = 0; i < round_trips; i++) {
    if (write(to_echo[1], &byte, 1) != 1 || read(to_caller[0], &byte, 1) != 1) return 1;
  }
  double elapsed = seconds() - started;
  machine_jiffies(&busy_after, &all_after);

  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  double busy_share = (double)(busy_after - busy_before) / (double)(all_after - all_before);
  double cpu_seconds = busy_share * cores * elapsed;
  char where[64];
  if (caller_core < 0 && echo_core < 0)
    snprintf(where, sizeof where, "scheduler's choice");
  else
    snprintf(where, sizeof where, "cores %d and %d", caller_core, echo_core);
  printf("%-9s %-18s %6.1f us per round trip, machine CPU %5.1f us per round trip (%2.0f %% busy)\n",
         argv[1], where, elapsed / round_trips * 1e6, cpu_seconds / round_trips * 1e6,
         busy_share * 100);
  if (processes)
    waitpid(child, NULL, 0);
  else
    pthread_join(thread, NULL);
  return 0;
}
