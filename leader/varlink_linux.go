package leader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultVarlink is machined's varlink socket (systemd ≥ 256).
const DefaultVarlink = "/run/systemd/machine/io.systemd.Machine"

// varlinkTimeout bounds one List call; machined answers in well under a millisecond.
const varlinkTimeout = 2 * time.Second

// Machine is one machine as machined's varlink List reports it.
type Machine struct {
	Name          string `json:"name"`
	ID            string `json:"id"`
	Class         string `json:"class"`
	Service       string `json:"service"`
	RootDirectory string `json:"rootDirectory"`
	Unit          string `json:"unit"`
	Leader        struct {
		PID     int    `json:"pid"`
		PidfdID uint64 `json:"pidfdId"`
		BootID  string `json:"bootId"`
	} `json:"leader"`
	Timestamp struct {
		Realtime  uint64 `json:"realtime"`
		Monotonic uint64 `json:"monotonic"`
	} `json:"timestamp"`
}

// errNoSuchMachine is machined's io.systemd.Machine.NoSuchMachine.
var errNoSuchMachine = errors.New("no such machine")

// varlinkList calls io.systemd.Machine.List for one machine on socket.
// It talks to the socket with plain system calls: the net package would
// double the size of the programs.
func varlinkList(socket, name string) (*Machine, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	// Bounds connect, send and receive alike.
	tv := unix.NsecToTimeval(varlinkTimeout.Nanoseconds())
	for _, opt := range []int{unix.SO_SNDTIMEO, unix.SO_RCVTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			return nil, err
		}
	}
	if err := retryEINTR(func() error { return unix.Connect(fd, &unix.SockaddrUnix{Name: socket}) }); err != nil {
		return nil, err
	}
	req, err := json.Marshal(map[string]any{
		"method":     "io.systemd.Machine.List",
		"parameters": map[string]string{"name": name},
	})
	if err != nil {
		return nil, err
	}
	for req = append(req, 0); len(req) > 0; {
		n, err := unix.Write(fd, req)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("varlink request: %w", err)
		}
		req = req[n:]
	}
	msg, err := readMessage(fd)
	if err != nil {
		return nil, err
	}
	return parseListReply(msg)
}

func retryEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

// readMessage reads one NUL-terminated varlink message (at most 1 MiB).
func readMessage(fd int) ([]byte, error) {
	var msg []byte
	buf := make([]byte, 4096)
	for len(msg) < 1<<20 {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("varlink reply: %w", err)
		}
		if n == 0 {
			return nil, errors.New("varlink reply: connection closed")
		}
		if i := bytes.IndexByte(buf[:n], 0); i >= 0 {
			return append(msg, buf[:i]...), nil
		}
		msg = append(msg, buf[:n]...)
	}
	return nil, errors.New("varlink reply too large")
}

// parseListReply decodes one reply of io.systemd.Machine.List.
func parseListReply(msg []byte) (*Machine, error) {
	var reply struct {
		Parameters *Machine `json:"parameters"`
		Error      string   `json:"error"`
	}
	if err := json.Unmarshal(msg, &reply); err != nil {
		return nil, fmt.Errorf("varlink reply: %w", err)
	}
	switch {
	case reply.Error == "io.systemd.Machine.NoSuchMachine":
		return nil, errNoSuchMachine
	case reply.Error != "":
		return nil, fmt.Errorf("varlink: %s", reply.Error)
	case reply.Parameters == nil || reply.Parameters.Leader.PID < 1:
		return nil, errors.New("varlink reply without a leader")
	}
	return reply.Parameters, nil
}

// state converts a varlink reply into the state-file form.
func (m *Machine) state() *State {
	return &State{
		Name: m.Name, Scope: m.Unit, Service: m.Service, Root: m.RootDirectory, ID: m.ID,
		Class: m.Class, Leader: m.Leader.PID, Monotonic: m.Timestamp.Monotonic,
		Realtime: m.Timestamp.Realtime, LeaderPidfdID: m.Leader.PidfdID,
	}
}

// lookup finds name through varlink where machined serves it, else through
// its state file. It returns the leader's pidfd id when machined gave one.
func lookup(name string, opt *Options) (*State, uint64, error) {
	socket := DefaultVarlink
	if opt != nil && opt.Varlink != "" {
		socket = opt.Varlink
	}
	if socket != "-" {
		m, err := varlinkList(socket, name)
		if err == nil {
			return m.state(), m.Leader.PidfdID, nil
		}
		if errors.Is(err, errNoSuchMachine) {
			return nil, 0, &NotRunningError{Name: name, Reason: "machined has no record of it", Running: running(opt)}
		}
		// No socket (systemd < 256, or no machined): the state file decides.
	}
	st, err := ReadState(name, opt)
	if err != nil {
		return nil, 0, err
	}
	return st, 0, nil
}
