// vmdk-mount's C shim over libfuse3's high-level API. Swift never sees libfuse's types: it
// hands over plain callbacks (cfuse_ops) that answer with negative errno values, and the shim
// adapts them to struct fuse_operations, runs the multithreaded loop, and handles signals,
// unmounting and daemonizing.
#ifndef CFUSE_H
#define CFUSE_H

#include <stddef.h>
#include <stdint.h>

/// What getattr answers, in the shim's own layout (converted to struct stat in C).
typedef struct cfuse_attr {
  uint64_t ino;
  uint64_t size;
  uint64_t blocks;  // 512-byte units
  uint64_t nlink;
  uint64_t rdev;
  uint32_t mode;  // type and permission bits (S_IFREG | 0644)
  uint32_t uid;
  uint32_t gid;
  int64_t atime_sec, mtime_sec, ctime_sec;
  uint32_t atime_nsec, mtime_nsec, ctime_nsec;
} cfuse_attr;

typedef struct cfuse_statfs {
  uint64_t block_size;
  uint64_t blocks;
  uint64_t files;
  uint64_t name_max;
} cfuse_statfs;

/// One piece of a read's reply (cfuse_ops.pieces).
typedef struct cfuse_piece {
  /// >= 0: `length` bytes of this open file from byte `offset`, moved to the kernel without a
  /// copy here (splice); CFUSE_PIECE_ZERO: zeros; CFUSE_PIECE_READ: read through cfuse_ops.read.
  int32_t fd;
  uint64_t offset;
  uint64_t length;
} cfuse_piece;

enum { CFUSE_PIECE_ZERO = -1, CFUSE_PIECE_READ = -2, CFUSE_MAX_PIECES = 64 };

/// Adds one name to a readdir answer; returns non-zero when the kernel's buffer is full.
typedef int (*cfuse_fill_fn)(void *fill_ctx, const char *name);

/// Every callback returns 0 or a negative errno. `ctx` is cfuse_ops.ctx.
typedef struct cfuse_ops {
  void *ctx;
  int (*getattr)(void *ctx, const char *path, cfuse_attr *attr);
  int (*readdir)(void *ctx, const char *path, void *fill_ctx, cfuse_fill_fn fill);
  /// Sets *fh to what read later receives, and *size to the file's size. `flags` are open(2)'s.
  int (*open)(void *ctx, const char *path, int flags, uint64_t *fh, uint64_t *size);
  /// Returns the count read (the full `size` unless at the end of the file) or a negative errno.
  long (*read)(void *ctx, const char *path, uint64_t fh, char *buf, size_t size, uint64_t offset);
  /// Optional (NULL: every read goes through `read`). Describes the reply to a read of `size`
  /// bytes at `offset` as at most `max` pieces, in order, whose lengths sum to what `read`
  /// would return: returns their count (0 at the end of the file), or -1 when the bytes are
  /// to be read through `read`. Never fails: an error shows when `read` is asked.
  long (*pieces)(void *ctx, uint64_t fh, size_t size, uint64_t offset, cfuse_piece *out, size_t max);
  /// Writes the target into buf (NUL-terminated, truncated to size - 1).
  int (*readlink)(void *ctx, const char *path, char *buf, size_t size);
  int (*statfs)(void *ctx, cfuse_statfs *st);
} cfuse_ops;

/// Forks into the background before anything else runs: the parent waits until the child
/// calls cfuse_daemon_ready (the mount is up: the parent exits 0) or exits (the parent prints
/// what the child wrote to the pipe and exits with the child's status). Returns the pipe's
/// write end in the child, or -1 (errno set) when fork or pipe fail. Never returns in the parent.
int cfuse_daemon_start(void);

/// In the child: reports success to the parent, detaches from the terminal (stdin, stdout
/// and stderr become /dev/null; messages go to syslog from then on) and closes the pipe.
void cfuse_daemon_ready(int fd);

/// cfuse_run's flags.
enum {
  /// Serve one request at a time (libfuse's single-threaded loop).
  CFUSE_SINGLE_THREAD = 1,
};

/// Which regular files are opened with FOPEN_DIRECT_IO (cfuse_run's `direct_io_from`): reads of
/// those bypass the kernel's page cache of the mount and each read(2) becomes one request
/// whose reply the kernel copies straight into the reader's buffer (one copy in all with
/// splice); their st_blksize is 1 MiB. Faster for one-pass large reads; small reads lose
/// read-ahead (one round trip each). A shared mmap of such a file works when the kernel took
/// FUSE_DIRECT_IO_ALLOW_MMAP (Linux >= 6.6, asked for in the INIT reply), else fails with
/// ENODEV. A size in bytes (0: every file), or one of these.
enum {
  /// Every regular file through the page cache (libfuse's default).
  CFUSE_DIRECT_IO_NEVER = -1,
  /// Every regular file direct, whether or not the kernel took FUSE_DIRECT_IO_ALLOW_MMAP.
  CFUSE_DIRECT_IO_ALWAYS = -2,
};

/// Mounts at `mountpoint` with the comma-separated `options` (always read-only), calls
/// `mounted(mounted_ctx)` once the mount is up, and serves until `fusermount3 -u`, SIGTERM,
/// SIGINT or SIGHUP; then unmounts. `flags`: CFUSE_SINGLE_THREAD. `direct_io_from`: a size in
/// bytes (files at least that large are opened with FOPEN_DIRECT_IO, but only when the kernel
/// took FUSE_DIRECT_IO_ALLOW_MMAP, so that a shared mmap still works), CFUSE_DIRECT_IO_ALWAYS
/// or CFUSE_DIRECT_IO_NEVER. Returns 0 on a clean end, 1 when the mount failed (a message went
/// to stderr), 2 when the loop ended with an error.
int cfuse_run(const char *program, const char *mountpoint, const char *options, unsigned flags,
              int64_t direct_io_from, const cfuse_ops *ops, void (*mounted)(void *mounted_ctx),
              void *mounted_ctx);

/// One line to stderr, or to syslog once cfuse_daemon_ready detached the process.
void cfuse_log(const char *message);

#endif
