/* config: InitEx with a configuration file, then Open/Read/Close of a disk, printing every line
 * the library logs and what InitEx and Open returned. VixConfigTests (InteropTests) runs it.
 *
 *   config CONFIG|- DISK callbacks   log and warn callbacks that print "log: LINE" / "warn: LINE"
 *   config CONFIG|- DISK none        NULL callbacks: the library's default logger
 *
 * Prints, after the lines: initEx=CODE, open=CODE, text=ERRORTEXT (of a failed call),
 * logLines=N, warnLines=N. Exit 0 unless the program itself went wrong. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vixDiskLib.h"

static int log_lines, warn_lines;

static void on_log(const char *fmt, va_list args) {
  char line[8192];
  vsnprintf(line, sizeof line, fmt, args);
  log_lines++;
  printf("log: %s", line);
  if (line[0] == 0 || line[strlen(line) - 1] != '\n') printf("\n(no newline)\n");
}

static void on_warn(const char *fmt, va_list args) {
  char line[8192];
  vsnprintf(line, sizeof line, fmt, args);
  warn_lines++;
  printf("warn: %s", line);
  if (line[0] == 0 || line[strlen(line) - 1] != '\n') printf("\n(no newline)\n");
}

static void print_text(VixError e) {
  char *text = VixDiskLib_GetErrorText(e, NULL);
  printf("text=%s\n", text ? text : "(null)");
  VixDiskLib_FreeErrorText(text);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: config CONFIG|- DISK callbacks|none\n");
    return 2;
  }
  const char *config = strcmp(argv[1], "-") == 0 ? NULL : argv[1];
  int callbacks = strcmp(argv[3], "callbacks") == 0;
  setvbuf(stdout, NULL, _IOLBF, 0);
  VixError e = callbacks ? VixDiskLib_InitEx(7, 0, on_log, on_warn, NULL, NULL, config)
                         : VixDiskLib_InitEx(7, 0, NULL, NULL, NULL, NULL, config);
  printf("initEx=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
  if (VIX_FAILED(e)) {
    print_text(e);
    printf("logLines=%d\nwarnLines=%d\n", log_lines, warn_lines);
    return 0;
  }
  VixDiskLibConnection conn = NULL;
  e = VixDiskLib_ConnectEx(NULL, 1, NULL, NULL, &conn);
  if (VIX_FAILED(e)) {
    fprintf(stderr, "config: ConnectEx failed\n");
    return 1;
  }
  VixDiskLibHandle disk = NULL;
  e = VixDiskLib_Open(conn, argv[2], VIXDISKLIB_FLAG_OPEN_READ_ONLY, &disk);
  printf("open=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
  if (VIX_FAILED(e)) {
    print_text(e);
  } else {
    static uint8 buf[65536];
    e = VixDiskLib_Read(disk, 0, 128, buf);
    printf("read=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
    /* Past the end: an error the library records (and logs at debug level). */
    e = VixDiskLib_Read(disk, (VixDiskLibSectorType)1 << 40, 1, buf);
    printf("readPastEnd=%llu\n", (unsigned long long)VIX_ERROR_CODE(e));
    VixDiskLib_Close(disk);
  }
  VixDiskLib_Disconnect(conn);
  VixDiskLib_Exit();
  printf("logLines=%d\nwarnLines=%d\n", log_lines, warn_lines);
  return 0;
}
