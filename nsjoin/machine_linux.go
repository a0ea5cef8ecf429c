package nsjoin

import (
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Machine is the machine's file system, seen from its root directory. Every
// lookup resolves inside that root (openat2 RESOLVE_IN_ROOT): an absolute
// symlink in the machine, or "..", never leads to a host file, whether or
// not the mount namespace is joined.
type Machine struct {
	root int // O_PATH descriptor of the leader's root directory
}

func (m *Machine) openat(path string, flags uint64) (int, error) {
	return m.openatResolve(path, flags, 0)
}

func (m *Machine) openatResolve(path string, flags, resolve uint64) (int, error) {
	how := unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: resolve | unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	for {
		fd, err := unix.Openat2(m.root, strings.TrimLeft(path, "/"), &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// Open opens a regular file of the machine for reading. FIFOs, devices
// and sockets are refused, so a machine cannot make the tool block.
func (m *Machine) Open(path string) (*File, error) {
	fd, err := m.openat(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
	if err != nil {
		return nil, fmt.Errorf("open %s in the machine: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("open %s in the machine: not a regular file", path)
	}
	return &File{fd: fd}, nil
}

// File is a file open for reading by plain read(2), without the runtime's
// poller (an os.File would set it up: an epoll instance and an eventfd).
type File struct{ fd int }

// openFile opens path of the host for reading.
func openFile(path string) (*File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &File{fd: fd}, nil
}

// Read reads up to len(b) bytes; io.EOF at the end.
func (f *File) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(f.fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(b) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// Close closes the file.
func (f *File) Close() error { return unix.Close(f.fd) }

// IsDir reports whether path is a directory in the machine.
func (m *Machine) IsDir(path string) bool {
	fd, err := m.openat(path, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// IsExecutable reports whether path is an executable regular file in the machine.
func (m *Machine) IsExecutable(path string) bool {
	fd, err := m.openat(path, unix.O_PATH)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o111 != 0
}
