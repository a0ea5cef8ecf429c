package nsjoin

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// PTY is a pseudo-terminal of the machine's own devpts instance.
type PTY struct {
	Master *os.File // the tool's side, non-blocking
	Slave  int      // the command's side: its 0, 1 and 2; close after Start
	Name   string   // the slave's path inside the machine, /dev/pts/N
}

// OpenPTY allocates a pseudo-terminal from the machine's /dev/pts/ptmx,
// found without following any symlink, and opens its other end through
// the master (TIOCGPTPEER), never by a path.
func (m *Machine) OpenPTY() (*PTY, error) {
	fd, err := m.openatResolve("dev/pts/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, unix.RESOLVE_NO_SYMLINKS)
	if err != nil {
		return nil, fmt.Errorf("open the machine's /dev/pts/ptmx: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 5 || unix.Minor(st.Rdev) != 2 {
		unix.Close(fd)
		return nil, fmt.Errorf("the machine's /dev/pts/ptmx is not a pseudo-terminal multiplexer")
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("unlock pseudo-terminal: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pseudo-terminal number: %w", err)
	}
	slave, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("open pseudo-terminal peer: %w", errno)
	}
	return &PTY{Master: os.NewFile(uintptr(fd), "ptmx"), Slave: int(slave), Name: "/dev/pts/" + strconv.Itoa(n)}, nil
}
