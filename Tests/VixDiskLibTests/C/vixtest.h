/* What the C test programs share: the local connection, CHECK (a failed call prints its name
 * and error text on stderr and exits 1) and open_disk. Define VIXTEST_NAME before including. */
#ifndef VIXTEST_H
#define VIXTEST_H
#include <stdio.h>
#include <stdlib.h>

#include "vixDiskLib.h"

static VixDiskLibConnection conn;

static void fail(const char *what, VixError err) {
  char *text = VixDiskLib_GetErrorText(err, NULL);
  fprintf(stderr, VIXTEST_NAME ": %s failed: %llu: %s\n", what,
          (unsigned long long)VIX_ERROR_CODE(err), text ? text : "?");
  VixDiskLib_FreeErrorText(text);
  exit(1);
}

#define CHECK(call)                      \
  do {                                   \
    VixError e_ = (call);                \
    if (VIX_FAILED(e_)) fail(#call, e_); \
  } while (0)

static VixDiskLibHandle open_disk(const char *path, uint32 flags) {
  VixDiskLibHandle h = NULL;
  CHECK(VixDiskLib_Open(conn, path, flags, &h));
  return h;
}
#endif
