// The libfuse3 side of vmdk-mount: struct fuse_operations over cfuse_ops, every write
// operation refused with EROFS, the INIT reply's FUSE_DIRECT_IO_ALLOW_MMAP (a custom io on the
// session), and the fork/pipe daemonizing (see cfuse.h).
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include "cfuse.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse3/fuse.h>
#include <fuse3/fuse_lowlevel.h>
#include <linux/fuse.h>
#include <stdatomic.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

static const cfuse_ops *g_ops;
// The max_read the mount added to its options (0: none); INIT must ask for the same.
static size_t g_max_read;
// Whether the kernel takes spliced replies (INIT granted FUSE_CAP_SPLICE_WRITE): only then
// are file pieces worth naming (libfuse would otherwise copy them through a new buffer).
static int g_splice;
// Regular files of at least this many bytes are opened with FOPEN_DIRECT_IO (cfuse_run's
// direct_io_from); g_direct_io_always: whether without FUSE_DIRECT_IO_ALLOW_MMAP too.
static int64_t g_direct_io_from = CFUSE_DIRECT_IO_NEVER;
static int g_direct_io_always;
// The INIT reply asked for FUSE_DIRECT_IO_ALLOW_MMAP (set before the reply is written, so
// before any open): a shared mmap of a direct-io file works.
static atomic_int g_allow_mmap;
static int g_syslog;

void cfuse_log(const char *message) {
  if (g_syslog) {
    syslog(LOG_ERR, "%s", message);
  } else {
    dprintf(2, "%s\n", message);
  }
}

// MARK: Reads

// Whether a file of this mode and size is opened with FOPEN_DIRECT_IO. Without
// FUSE_DIRECT_IO_ALLOW_MMAP a shared mmap of it would fail (ENODEV): only an explicit
// CFUSE_DIRECT_IO_ALWAYS takes that.
static int is_direct(uint32_t mode, uint64_t size) {
  if (!S_ISREG(mode)) return 0;
  if (g_direct_io_always) return 1;
  if (g_direct_io_from < 0 || !atomic_load(&g_allow_mmap)) return 0;
  return size >= (uint64_t)g_direct_io_from;
}

static int s_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  (void)fi;
  cfuse_attr a;
  memset(&a, 0, sizeof a);
  int r = g_ops->getattr(g_ops->ctx, path, &a);
  if (r != 0) return r;
  memset(st, 0, sizeof *st);
  st->st_ino = a.ino;
  st->st_mode = a.mode;
  st->st_nlink = a.nlink;
  st->st_uid = a.uid;
  st->st_gid = a.gid;
  st->st_rdev = a.rdev;
  st->st_size = (off_t)a.size;
  st->st_blocks = (blkcnt_t)a.blocks;
  // Without the page cache each read(2) is one request: readers that size their reads by
  // st_blksize (cat, cp) then ask for 1 MiB at a time instead of 128 KiB.
  st->st_blksize = is_direct(a.mode, a.size) ? (1 << 20) : 4096;
  st->st_atim.tv_sec = a.atime_sec;
  st->st_atim.tv_nsec = a.atime_nsec;
  st->st_mtim.tv_sec = a.mtime_sec;
  st->st_mtim.tv_nsec = a.mtime_nsec;
  st->st_ctim.tv_sec = a.ctime_sec;
  st->st_ctim.tv_nsec = a.ctime_nsec;
  return 0;
}

struct fill_ctx {
  void *buf;
  fuse_fill_dir_t filler;
};

static int s_fill(void *ctx, const char *name) {
  struct fill_ctx *f = ctx;
  return f->filler(f->buf, name, NULL, 0, 0);
}

static int s_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t offset, struct fuse_file_info *fi,
                     enum fuse_readdir_flags flags) {
  (void)offset;
  (void)fi;
  (void)flags;
  struct fill_ctx f = {buf, filler};
  if (filler(buf, ".", NULL, 0, 0) || filler(buf, "..", NULL, 0, 0)) return -ENOMEM;
  return g_ops->readdir(g_ops->ctx, path, &f, s_fill);
}

static int s_open(const char *path, struct fuse_file_info *fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) return -EROFS;
  uint64_t fh = 0, size = 0;
  int r = g_ops->open(g_ops->ctx, path, fi->flags, &fh, &size);
  if (r != 0) return r;
  fi->fh = fh;
  fi->keep_cache = 1;  // the image does not change under the mount
  fi->direct_io = is_direct(S_IFREG, size);
  return 0;
}

// A reply in one buffer read through cfuse_ops.read.
static int read_copy(const char *path, struct fuse_bufvec **bufp, size_t size, off_t offset,
                     struct fuse_file_info *fi) {
  struct fuse_bufvec *bv = malloc(sizeof *bv);
  void *mem = malloc(size > 0 ? size : 1);
  if (bv == NULL || mem == NULL) {
    free(bv);
    free(mem);
    return -ENOMEM;
  }
  long r = g_ops->read(g_ops->ctx, path, fi->fh, mem, size, (uint64_t)offset);
  if (r < 0) {
    free(bv);
    free(mem);
    return (int)r;
  }
  *bv = (struct fuse_bufvec)FUSE_BUFVEC_INIT((size_t)r);
  bv->buf[0].mem = mem;
  *bufp = bv;
  return 0;
}

// Frees a reply being built: the memory pieces so far and the vector.
static void free_reply(struct fuse_bufvec *bv, size_t filled) {
  for (size_t i = 0; i < filled; i++) {
    if (!(bv->buf[i].flags & FUSE_BUF_IS_FD)) free(bv->buf[i].mem);
  }
  free(bv);
}

// READ: when cfuse_ops.pieces places the bytes in open files, the reply names them (fd,
// offset, length) and libfuse splices their page-cache pages to the kernel (no copy in this
// process); zeros and bytes that must be decoded go as memory buffers. Otherwise one buffer
// read through cfuse_ops.read. libfuse frees the vector and its memory buffers.
static int s_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t offset,
                      struct fuse_file_info *fi) {
  if (offset < 0) return -EINVAL;
  cfuse_piece pieces[CFUSE_MAX_PIECES];
  long n = (g_ops->pieces == NULL || !g_splice)
               ? -1
               : g_ops->pieces(g_ops->ctx, fi->fh, size, (uint64_t)offset, pieces, CFUSE_MAX_PIECES);
  if (n < 0 || n > CFUSE_MAX_PIECES) return read_copy(path, bufp, size, offset, fi);
  uint64_t total = 0;
  for (long i = 0; i < n; i++) {
    // The pieces must add up to at most the request: anything else is the callback's bug.
    if (pieces[i].length == 0 || pieces[i].length > size - total) return read_copy(path, bufp, size, offset, fi);
    total += pieces[i].length;
  }
  size_t count = n > 0 ? (size_t)n : 1;
  struct fuse_bufvec *bv = calloc(1, sizeof *bv + (count - 1) * sizeof(struct fuse_buf));
  if (bv == NULL) return -ENOMEM;
  bv->count = n > 0 ? (size_t)n : 1;
  uint64_t at = 0;
  for (long i = 0; i < n; i++) {
    struct fuse_buf *b = &bv->buf[i];
    cfuse_piece p = pieces[i];
    b->size = (size_t)p.length;
    if (p.fd >= 0) {
      b->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
      b->fd = p.fd;
      b->pos = (off_t)p.offset;
    } else if (p.fd == CFUSE_PIECE_ZERO) {
      b->mem = calloc(1, b->size);
      if (b->mem == NULL) {
        free_reply(bv, (size_t)i);
        return -ENOMEM;
      }
    } else {
      b->mem = malloc(b->size);
      if (b->mem == NULL) {
        free_reply(bv, (size_t)i);
        return -ENOMEM;
      }
      long r = g_ops->read(g_ops->ctx, path, fi->fh, b->mem, b->size, (uint64_t)offset + at);
      if (r < 0 || (size_t)r != b->size) {
        free_reply(bv, (size_t)i + 1);
        return r < 0 ? (int)r : -EIO;
      }
    }
    at += p.length;
  }
  *bufp = bv;
  return 0;
}

static int s_readlink(const char *path, char *buf, size_t size) {
  return g_ops->readlink(g_ops->ctx, path, buf, size);
}

static int s_statfs(const char *path, struct statvfs *st) {
  (void)path;
  cfuse_statfs s;
  memset(&s, 0, sizeof s);
  int r = g_ops->statfs(g_ops->ctx, &s);
  if (r != 0) return r;
  memset(st, 0, sizeof *st);
  st->f_bsize = s.block_size;
  st->f_frsize = s.block_size;
  st->f_blocks = s.blocks;
  st->f_files = s.files;
  st->f_namemax = s.name_max;
  st->f_flag = ST_RDONLY;
  return 0;
}

static int s_access(const char *path, int mask) {
  if (mask & W_OK) return -EROFS;
  cfuse_attr a;
  return g_ops->getattr(g_ops->ctx, path, &a);
}

static void *s_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
  // Replies that name file pieces are spliced: the kernel takes the pages of the image's
  // page cache into the reply instead of this process copying them. VMDK_MOUNT_SPLICE=0
  // turns it off (to compare the copying path).
  if (g_max_read > 0) conn->max_read = (unsigned)g_max_read;
  const char *splice = getenv("VMDK_MOUNT_SPLICE");
  if ((splice == NULL || strcmp(splice, "0") != 0) && (conn->capable & FUSE_CAP_SPLICE_WRITE)) {
    conn->want |= FUSE_CAP_SPLICE_WRITE;
    g_splice = 1;
  }
  cfg->use_ino = 1;  // st_ino as the file system numbers it: hard links share one
  cfg->readdir_ino = 1;
  cfg->kernel_cache = 1;
  cfg->entry_timeout = 60;
  cfg->attr_timeout = 60;
  cfg->negative_timeout = 60;
  return NULL;
}

// MARK: Writes: all refused

static int w_path(const char *p) { (void)p; return -EROFS; }
static int w_mode(const char *p, mode_t m) { (void)p; (void)m; return -EROFS; }
static int w_mknod(const char *p, mode_t m, dev_t d) { (void)p; (void)m; (void)d; return -EROFS; }
static int w_two(const char *a, const char *b) { (void)a; (void)b; return -EROFS; }
static int w_rename(const char *a, const char *b, unsigned int f) { (void)a; (void)b; (void)f; return -EROFS; }
static int w_chmod(const char *p, mode_t m, struct fuse_file_info *fi) { (void)p; (void)m; (void)fi; return -EROFS; }
static int w_chown(const char *p, uid_t u, gid_t g, struct fuse_file_info *fi) {
  (void)p; (void)u; (void)g; (void)fi; return -EROFS;
}
static int w_truncate(const char *p, off_t o, struct fuse_file_info *fi) { (void)p; (void)o; (void)fi; return -EROFS; }
static int w_write(const char *p, const char *b, size_t s, off_t o, struct fuse_file_info *fi) {
  (void)p; (void)b; (void)s; (void)o; (void)fi; return -EROFS;
}
static int w_setxattr(const char *p, const char *n, const char *v, size_t s, int f) {
  (void)p; (void)n; (void)v; (void)s; (void)f; return -EROFS;
}
static int w_removexattr(const char *p, const char *n) { (void)p; (void)n; return -EROFS; }
static int w_create(const char *p, mode_t m, struct fuse_file_info *fi) { (void)p; (void)m; (void)fi; return -EROFS; }
static int w_utimens(const char *p, const struct timespec tv[2], struct fuse_file_info *fi) {
  (void)p; (void)tv; (void)fi; return -EROFS;
}
static int w_fallocate(const char *p, int m, off_t o, off_t l, struct fuse_file_info *fi) {
  (void)p; (void)m; (void)o; (void)l; (void)fi; return -EROFS;
}

// MARK: Daemon

static int g_daemon_fd = -1;

int cfuse_daemon_start(void) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid > 0) {
    close(fds[1]);
    // The child writes error text, or closes the pipe after cfuse_daemon_ready's one byte.
    char buf[4096];
    int ready = 0;
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) != 0) {
      if (n < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (n == 1 && buf[0] == 0) {
        ready = 1;
        continue;
      }
      (void)!write(2, buf, (size_t)n);
    }
    if (ready) _exit(0);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 2);
  }
  close(fds[0]);
  // A daemon keeps no descriptor of its parent's: a parent may wait for one to close to
  // learn that its child ended (swift-corelibs-foundation's Process does).
  if (fds[1] > 3) close_range(3, (unsigned)fds[1] - 1, 0);
  close_range((unsigned)fds[1] + 1, ~0U, 0);
  setsid();
  // Until the mount is up, the child's stderr is the pipe: the parent prints it.
  dup2(fds[1], 2);
  g_daemon_fd = fds[1];
  return fds[1];
}

void cfuse_daemon_ready(int fd) {
  if (fd < 0) return;
  openlog("vmdk-mount", LOG_PID, LOG_DAEMON);
  g_syslog = 1;
  char zero = 0;
  (void)!write(fd, &zero, 1);
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (null > 2) close(null);
  }
  close(fd);
  g_daemon_fd = -1;
  (void)!chdir("/");
}

// MARK: Readahead

// The kernel reads ahead at most 128 KiB in a FUSE file (its INIT offer, which libfuse can
// only lower), so a sequential reader costs one round trip to this process per 128-256 KiB.
// With a 4 MiB window the kernel sends 1 MiB requests (libfuse's 256 pages), a quarter of the
// round trips. The window is the mount's read_ahead_kb in sysfs, which INIT's reply resets: a
// thread stats the mount point (answered only after INIT) and then writes it. When it cannot
// (not root, no sysfs) the mount only reads slower.
// The mount is said to be up (`mounted`) after that, so the first reader gets the window.
enum { readahead_kb = 4096 };

struct readahead_job {
  char *mountpoint;
  void (*mounted)(void *);
  void *mounted_ctx;
};

static void write_readahead(const struct stat *st) {
  char path[96];
  snprintf(path, sizeof path, "/sys/class/bdi/%u:%u/read_ahead_kb", major(st->st_dev), minor(st->st_dev));
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  char value[16];
  int n = snprintf(value, sizeof value, "%d", readahead_kb);
  (void)!write(fd, value, (size_t)n);
  close(fd);
}

static void *set_readahead(void *arg) {
  struct readahead_job *job = arg;
  struct stat st;
  if (stat(job->mountpoint, &st) == 0) write_readahead(&st);
  if (job->mounted) job->mounted(job->mounted_ctx);
  free(job->mountpoint);
  free(job);
  return NULL;
}

// Calls `mounted` from the thread once the mount answers, or at once when no thread starts.
static void start_readahead(const char *mountpoint, void (*mounted)(void *), void *ctx) {
  struct readahead_job *job = calloc(1, sizeof *job);
  if (job != NULL) job->mountpoint = strdup(mountpoint);
  if (job == NULL || job->mountpoint == NULL) {
    free(job);
    if (mounted) mounted(ctx);
    return;
  }
  job->mounted = mounted;
  job->mounted_ctx = ctx;
  pthread_t t;
  if (pthread_create(&t, NULL, set_readahead, job) != 0) {
    free(job->mountpoint);
    free(job);
    if (mounted) mounted(ctx);
    return;
  }
  pthread_detach(t);
}

// MARK: Splice size

// libfuse splices a reply only when it fits its pipe, which it sizes as the reply plus a page
// per piece and two more; an unprivileged pipe grows only to /proc/sys/fs/pipe-max-size
// (1 MiB by default). A 1 MiB request (the kernel's 256 pages) never fits such a pipe, so
// every reply would be copied: the mount caps requests at the pipe size less room for
// CFUSE_MAX_PIECES / 4 pieces (max_read; 952 KiB with a 1 MiB pipe), unless -o max_read= is given.
static size_t splice_max_read(void) {
  long page = sysconf(_SC_PAGESIZE);
  if (page <= 0) page = 4096;
  size_t pipe_max = 1 << 20;
  int fd = open("/proc/sys/fs/pipe-max-size", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n > 0) {
      buf[n] = 0;
      long v = atol(buf);
      if (v > 0) pipe_max = (size_t)v;
    }
  }
  size_t cap = (size_t)1 << 20;  // libfuse's 256 pages
  size_t room = (size_t)page * (CFUSE_MAX_PIECES / 4 + 2);
  if (pipe_max <= room + (size_t)page * 4) return 0;
  size_t fit = (pipe_max - room) / (size_t)page * (size_t)page;
  return fit < cap ? fit : 0;
}

// MARK: INIT: FUSE_DIRECT_IO_ALLOW_MMAP

// Without FUSE_DIRECT_IO_ALLOW_MMAP (INIT flag bit 36, Linux >= 6.6 / protocol 7.39) the kernel
// refuses a shared mmap of a FOPEN_DIRECT_IO file with ENODEV; with it, the mapping goes through
// the page cache as for any file. libfuse 3.14 cannot ask for it (its capability word is 32
// bits), so the session's io is ours: `read` passes requests through and notes the unique id of
// an INIT whose kernel offers the flag, `writev` adds FUSE_INIT_EXT and the flag to that one
// reply. libfuse keeps the io it was given, on the descriptor fuse_mount opened.
// `splice_send` must be given too, or libfuse stops offering FUSE_CAP_SPLICE_WRITE: it is
// splice(2) itself. Requests are read, not spliced in (no splice_receive): a read-only mount
// gets no WRITE requests, the only ones splicing in helps.
#ifndef FUSE_DIRECT_IO_ALLOW_MMAP
#define FUSE_DIRECT_IO_ALLOW_MMAP (1ULL << 36)
#endif
// The flags2 word (flags bits 32-63) of fuse_init_in and fuse_init_out, from Linux 5.17 on.
_Static_assert(offsetof(struct fuse_init_in, flags2) == 16, "fuse_init_in.flags2 at byte 16");
_Static_assert(offsetof(struct fuse_init_out, flags2) == 32, "fuse_init_out.flags2 at byte 32");
_Static_assert(sizeof(struct fuse_init_out) == 64, "fuse_init_out is 64 bytes");

// The INIT being answered: its unique id once read (0: none, or its kernel does not offer
// the flag). The kernel numbers requests from 2 up, never 0.
static _Atomic uint64_t g_init_unique;

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata) {
  (void)userdata;
  ssize_t n = read(fd, buf, len);
  size_t need = sizeof(struct fuse_in_header) + offsetof(struct fuse_init_in, flags2) + sizeof(uint32_t);
  if (n < (ssize_t)need) return n;
  struct fuse_in_header h;
  memcpy(&h, buf, sizeof h);
  if (h.opcode != FUSE_INIT) return n;
  struct fuse_init_in in;
  memset(&in, 0, sizeof in);
  size_t body = (size_t)n - sizeof h < sizeof in ? (size_t)n - sizeof h : sizeof in;
  memcpy(&in, (const char *)buf + sizeof h, body);
  uint64_t offered = in.flags & FUSE_INIT_EXT ? (uint64_t)in.flags2 << 32 : 0;
  if (in.major == 7 && in.minor >= 39 && (offered & FUSE_DIRECT_IO_ALLOW_MMAP))
    atomic_store(&g_init_unique, h.unique);
  return n;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata) {
  (void)userdata;
  uint64_t init = atomic_load(&g_init_unique);
  // libfuse answers INIT with two pieces: the out header and its whole fuse_init_out.
  if (init != 0 && count == 2 && iov[0].iov_len == sizeof(struct fuse_out_header) &&
      iov[1].iov_len == sizeof(struct fuse_init_out)) {
    struct fuse_out_header h;
    memcpy(&h, iov[0].iov_base, sizeof h);
    if (h.unique == init && h.error == 0) {
      struct fuse_init_out out;
      memcpy(&out, iov[1].iov_base, sizeof out);
      if (out.major == 7) {
        out.flags |= FUSE_INIT_EXT;
        out.flags2 |= (uint32_t)(FUSE_DIRECT_IO_ALLOW_MMAP >> 32);
        atomic_store(&g_init_unique, 0);
        atomic_store(&g_allow_mmap, 1);
        struct iovec patched[2] = {iov[0], {&out, sizeof out}};
        return writev(fd, patched, 2);
      }
    }
  }
  return writev(fd, iov, count);
}

static ssize_t io_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len, unsigned int flags,
                              void *userdata) {
  (void)userdata;
  return splice(fdin, offin, fdout, offout, len, flags);
}

// On the session fuse_mount made; a failure leaves libfuse's own io (and no shared mmap of
// direct-io files). VMDK_MOUNT_ALLOW_MMAP=0 leaves it too (to compare).
static void install_init_io(struct fuse *f) {
  const char *env = getenv("VMDK_MOUNT_ALLOW_MMAP");
  if (env != NULL && strcmp(env, "0") == 0) return;
  static const struct fuse_custom_io io = {
      .writev = io_writev,
      .read = io_read,
      .splice_send = io_splice_send,
      .splice_receive = NULL,
  };
  struct fuse_session *se = fuse_get_session(f);
  int fd = fuse_session_fd(se);
  if (fd >= 0 && fuse_session_custom_io(se, &io, fd) != 0)
    cfuse_log("vmdk-mount: cannot ask for FUSE_DIRECT_IO_ALLOW_MMAP: the session took no custom io");
}

// MARK: Loop

int cfuse_run(const char *program, const char *mountpoint, const char *options, unsigned flags,
              int64_t direct_io_from, const cfuse_ops *ops, void (*mounted)(void *mounted_ctx),
              void *mounted_ctx) {
  g_ops = ops;
  g_direct_io_always = direct_io_from == CFUSE_DIRECT_IO_ALWAYS;
  g_direct_io_from = direct_io_from < 0 ? CFUSE_DIRECT_IO_NEVER : direct_io_from;
  int single_thread = (flags & CFUSE_SINGLE_THREAD) != 0;
  static struct fuse_operations fo;
  memset(&fo, 0, sizeof fo);
  fo.init = s_init;
  fo.getattr = s_getattr;
  fo.readdir = s_readdir;
  fo.open = s_open;
  fo.read_buf = s_read_buf;
  fo.readlink = s_readlink;
  fo.statfs = s_statfs;
  fo.access = s_access;
  fo.mknod = w_mknod;
  fo.mkdir = w_mode;
  fo.unlink = w_path;
  fo.rmdir = w_path;
  fo.symlink = w_two;
  fo.rename = w_rename;
  fo.link = w_two;
  fo.chmod = w_chmod;
  fo.chown = w_chown;
  fo.truncate = w_truncate;
  fo.write = w_write;
  fo.setxattr = w_setxattr;
  fo.removexattr = w_removexattr;
  fo.create = w_create;
  fo.utimens = w_utimens;
  fo.fallocate = w_fallocate;

  // A parent may have left these blocked (a test runner does); the mount must see them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGHUP);
  pthread_sigmask(SIG_UNBLOCK, &stop, NULL);

  char opts[4096];
  size_t max_read = strstr(options, "max_read=") == NULL ? splice_max_read() : 0;
  const char *splice = getenv("VMDK_MOUNT_SPLICE");
  if (splice != NULL && strcmp(splice, "0") == 0) max_read = 0;
  if (max_read > 0 && (size_t)snprintf(opts, sizeof opts, "%s,max_read=%zu", options, max_read) < sizeof opts)
    options = opts;
  else
    max_read = 0;
  g_max_read = max_read;
  char *argv[] = {(char *)program, (char *)"-o", (char *)options, NULL};
  struct fuse_args args = FUSE_ARGS_INIT(3, argv);
  struct fuse *f = fuse_new(&args, &fo, sizeof fo, NULL);
  if (f == NULL) {
    fuse_opt_free_args(&args);
    return 1;
  }
  if (fuse_mount(f, mountpoint) != 0) {
    fuse_destroy(f);
    fuse_opt_free_args(&args);
    return 1;
  }
  install_init_io(f);
  struct fuse_session *se = fuse_get_session(f);
  if (fuse_set_signal_handlers(se) != 0) {
    fuse_unmount(f);
    fuse_destroy(f);
    fuse_opt_free_args(&args);
    return 1;
  }
  start_readahead(mountpoint, mounted, mounted_ctx);
  int r = single_thread ? fuse_loop(f) : fuse_loop_mt(f, 0);
  fuse_remove_signal_handlers(se);
  fuse_unmount(f);
  fuse_destroy(f);
  fuse_opt_free_args(&args);
  // A signal ends the loop with the signal's number (libfuse 3.14 sets the session's error to
  // it); an unmount with 0; a failure with a negative errno.
  return (r >= 0 || r == -EINTR) ? 0 : 2;
}
