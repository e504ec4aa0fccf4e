/* Internal to libvixDiskLib.so (not installed): calls a VixDiskLibGenericLogFunc, which takes
 * a va_list, with one finished line, since Swift cannot build a va_list portably. */
#ifndef VIXDISKLIB_GLUE_H
#define VIXDISKLIB_GLUE_H

#include "vixDiskLib.h"

/* Calls `function("%s", line)`; `line` ends with a newline, as VDDK's lines do. */
/* `function` is a VixDiskLibGenericLogFunc *, passed as void * (Swift has no va_list type in
 * exported signatures). */
void VixDiskLibGlue_CallLog(void *function, const char *line);

#endif
