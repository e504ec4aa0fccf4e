/* See include/vixDiskLibGlue.h. */
#include "vixDiskLibGlue.h"

static void call_with_args(VixDiskLibGenericLogFunc *function, const char *format, ...) {
  va_list args;
  va_start(args, format);
  function(format, args);
  va_end(args);
}

void VixDiskLibGlue_CallLog(void *function, const char *line) {
  if (function != NULL && line != NULL) call_with_args((VixDiskLibGenericLogFunc *)function, "%s", line);
}
