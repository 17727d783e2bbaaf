package rapl

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// SysFS is the sysfs mounted at root, read so that nothing put in it can
// block a sample. A sysfs attribute is a regular file whose read returns at
// once; a FIFO or a device in its place would block an open or a read for
// good. So every file is opened non-blocking and refused unless it is a
// regular file or a directory, and read with read(2) directly rather than
// through Go's poller, which would park the read of a file that has
// nothing to say yet instead of failing it.
func SysFS(root string) fs.FS { return sysFS(root) }

type sysFS string

// ErrNotRegular is why a file that is not a regular file is not read.
var ErrNotRegular = errors.New("not a regular file, as every sysfs attribute is: refused, as reading it could block")

// notRegular is the error for the file name of mode m.
func notRegular(op, name string, m fs.FileMode) error {
	kind := "a " + m.Type().String()
	switch {
	case m&fs.ModeNamedPipe != 0:
		kind = "a FIFO"
	case m&fs.ModeCharDevice != 0:
		kind = "a character device"
	case m&fs.ModeDevice != 0:
		kind = "a block device"
	case m&fs.ModeSocket != 0:
		kind = "a socket"
	case m.IsDir():
		kind = "a directory"
	}
	return &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("%s, %w", kind, ErrNotRegular)}
}

func (root sysFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	full := filepath.Join(string(root), filepath.FromSlash(name))
	var fd int
	err := retry(func() (err error) {
		fd, err = syscall.Open(full, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
		return err
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	var st syscall.Stat_t
	if err := retry(func() error { return syscall.Fstat(fd, &st) }); err != nil {
		syscall.Close(fd)
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return &valueFile{fd: fd, name: name, st: st}, nil
	case syscall.S_IFDIR:
		return os.NewFile(uintptr(fd), full), nil // read with getdents, which never blocks
	}
	syscall.Close(fd)
	return nil, notRegular("open", name, fileMode(st.Mode))
}

// valueFile is a regular file read with read(2) on a non-blocking
// descriptor: a read that would wait fails instead.
type valueFile struct {
	fd   int
	name string
	st   syscall.Stat_t
}

func (f *valueFile) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	err := retry(func() (err error) {
		n, err = syscall.Read(f.fd, p)
		return err
	})
	switch {
	case errors.Is(err, syscall.EAGAIN):
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fmt.Errorf("it has nothing to read now, which no sysfs attribute does: %w", err)}
	case err != nil:
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: err}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (f *valueFile) Close() error { return syscall.Close(f.fd) }

func (f *valueFile) Stat() (fs.FileInfo, error) { return fileInfo{f.name, f.st}, nil }

type fileInfo struct {
	name string
	st   syscall.Stat_t
}

func (i fileInfo) Name() string       { return filepath.Base(i.name) }
func (i fileInfo) Size() int64        { return i.st.Size }
func (i fileInfo) Mode() fs.FileMode  { return fileMode(i.st.Mode) }
func (i fileInfo) ModTime() time.Time { return time.Unix(i.st.Mtim.Unix()) }
func (i fileInfo) IsDir() bool        { return i.Mode().IsDir() }
func (i fileInfo) Sys() any           { return &i.st }

// fileMode is st_mode as fs.FileMode.
func fileMode(mode uint32) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	switch mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		m |= fs.ModeDir
	case syscall.S_IFIFO:
		m |= fs.ModeNamedPipe
	case syscall.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFBLK:
		m |= fs.ModeDevice
	case syscall.S_IFSOCK:
		m |= fs.ModeSocket
	case syscall.S_IFLNK:
		m |= fs.ModeSymlink
	}
	return m
}

// retry repeats a system call interrupted by a signal.
func retry(call func() error) error {
	for {
		if err := call(); !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
