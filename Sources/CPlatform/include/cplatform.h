// Linux calls that glibc declares only under _GNU_SOURCE, which Swift's Glibc module does not
// define: small wrappers with plain C signatures.
#ifndef CPLATFORM_H
#define CPLATFORM_H
#include <stdint.h>

/// sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE): start writeback, do not wait.
int cplatform_start_writeback(int fd, int64_t offset, int64_t count);

#endif
