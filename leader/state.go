package leader

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxStateSize bounds how much of a state file is read; machined's are a few hundred bytes.
const MaxStateSize = 64 << 10

// ErrBadState is wrapped by every error ParseState returns.
var ErrBadState = errors.New("malformed machine state file")

// State is what machined's state file /run/systemd/machines/NAME says about
// a machine. Keys this package does not know are kept in Extra.
type State struct {
	Name      string // NAME
	Scope     string // SCOPE: the machine's unit
	Service   string // SERVICE: who registered it, e.g. systemd-nspawn
	Root      string // ROOT: root directory on the host
	ID        string // ID: 128-bit machine id, hex
	Class     string // CLASS: container or vm
	Leader    int    // LEADER: PID in the PID namespace of the machined that wrote the file
	Monotonic uint64 // MONOTONIC: registration time, µs of CLOCK_MONOTONIC (0 if absent)
	Realtime  uint64 // REALTIME: registration time, µs since the epoch (0 if absent)
	// LeaderPidfdID is LEADER_PIDFDID, the leader's pidfs inode (newest
	// systemd only; 0 if absent).
	LeaderPidfdID uint64
	Extra         map[string]string
}

// ParseState parses a machined state file: lines KEY=VALUE, where VALUE is
// either bare or double-quoted with backslash escapes (machined's
// env_file_fputs_assignment), comments starting with '#', blank lines.
// LEADER is required; a line that is none of these, a duplicate key or a
// number that does not parse is an error.
func ParseState(data []byte) (*State, error) {
	if len(data) > MaxStateSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadState, MaxStateSize)
	}
	st := &State{}
	seen := map[string]bool{}
	for n, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimRight(line, "\r")
		if len(bytes.TrimSpace(line)) == 0 || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, raw, ok := bytes.Cut(line, []byte("="))
		key := string(k)
		if !ok || !validKey(key) {
			return nil, fmt.Errorf("%w: line %d: not KEY=VALUE", ErrBadState, n+1)
		}
		if seen[key] {
			return nil, fmt.Errorf("%w: line %d: %s given twice", ErrBadState, n+1, key)
		}
		seen[key] = true
		val, err := unquote(string(raw))
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %s: %v", ErrBadState, n+1, key, err)
		}
		if err := st.set(key, val); err != nil {
			return nil, fmt.Errorf("%w: line %d: %s: %v", ErrBadState, n+1, key, err)
		}
	}
	if !seen["LEADER"] {
		return nil, fmt.Errorf("%w: no LEADER", ErrBadState)
	}
	return st, nil
}

func (st *State) set(key, val string) error {
	var err error
	switch key {
	case "NAME":
		st.Name = val
	case "SCOPE":
		st.Scope = val
	case "SERVICE":
		st.Service = val
	case "ROOT":
		st.Root = val
	case "ID":
		st.ID = val
	case "CLASS":
		st.Class = val
	case "LEADER":
		var pid int64
		pid, err = strconv.ParseInt(val, 10, 32)
		if err == nil && pid < 1 {
			err = fmt.Errorf("PID %d out of range", pid)
		}
		st.Leader = int(pid)
	case "MONOTONIC":
		st.Monotonic, err = strconv.ParseUint(val, 10, 64)
	case "REALTIME":
		st.Realtime, err = strconv.ParseUint(val, 10, 64)
	case "LEADER_PIDFDID":
		st.LeaderPidfdID, err = strconv.ParseUint(val, 10, 64)
	default:
		if st.Extra == nil {
			st.Extra = map[string]string{}
		}
		st.Extra[key] = val
	}
	if ne, ok := err.(*strconv.NumError); ok {
		err = fmt.Errorf("not a number: %q", ne.Num)
	}
	return err
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'A' && c <= 'Z' || c == '_' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// unquote undoes systemd's shell_maybe_quote: a value that needs quoting is
// written in double quotes with \ before " \ ` and $.
func unquote(v string) (string, error) {
	if !strings.HasPrefix(v, `"`) {
		if strings.ContainsAny(v, "\"\\`$") {
			return "", errors.New("unquoted special character")
		}
		return v, nil
	}
	if len(v) < 2 || !strings.HasSuffix(v, `"`) {
		return "", errors.New("unterminated quote")
	}
	v = v[1 : len(v)-1]
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch c {
		case '\\':
			if i+1 == len(v) || !strings.ContainsRune("\"\\`$", rune(v[i+1])) {
				return "", errors.New("bad escape")
			}
			i++
			b.WriteByte(v[i])
		case '"':
			return "", errors.New("unescaped quote inside quotes")
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}
