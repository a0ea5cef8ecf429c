package nsjoin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Account is one line of a passwd file.
type Account struct {
	Name     string
	UID, GID uint32
	Home     string
	Shell    string
}

// ErrBadPasswdLine is wrapped by ParsePasswdLine's errors.
var ErrBadPasswdLine = errors.New("malformed passwd line")

// ParsePasswdLine parses "name:password:uid:gid:gecos:home:shell".
func ParsePasswdLine(line string) (Account, error) {
	f := strings.Split(line, ":")
	if len(f) != 7 || f[0] == "" {
		return Account{}, fmt.Errorf("%w: want 7 fields", ErrBadPasswdLine)
	}
	uid, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil {
		return Account{}, fmt.Errorf("%w: uid %q", ErrBadPasswdLine, f[2])
	}
	gid, err := strconv.ParseUint(f[3], 10, 32)
	if err != nil {
		return Account{}, fmt.Errorf("%w: gid %q", ErrBadPasswdLine, f[3])
	}
	return Account{Name: f[0], UID: uint32(uid), GID: uint32(gid), Home: f[5], Shell: f[6]}, nil
}

// maxAccountFile bounds how much of a machine's passwd or group file is read.
const maxAccountFile = 16 << 20

// FindAccount returns the first account in a passwd file for which match
// is true. Malformed lines are passed over, as the C library does.
func FindAccount(r io.Reader, match func(Account) bool) (Account, bool, error) {
	sc := bufio.NewScanner(io.LimitReader(r, maxAccountFile))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		a, err := ParsePasswdLine(sc.Text())
		if err == nil && match(a) {
			return a, true, nil
		}
	}
	return Account{}, false, sc.Err()
}

// OpenRegular opens path for reading only if it is a regular file, so a FIFO
// or device planted in a machine cannot block or feed the tool.
func OpenRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	return f, nil
}

// LoginShell returns the shell of the account with uid in the passwd file
// at path, or /bin/sh when there is none, it is empty, or it cannot be run.
func LoginShell(path string, uid uint32) string {
	const fallback = "/bin/sh"
	f, err := OpenRegular(path)
	if err != nil {
		return fallback
	}
	defer f.Close()
	a, ok, _ := FindAccount(f, func(a Account) bool { return a.UID == uid })
	if !ok || !strings.HasPrefix(a.Shell, "/") || checkExecutable(a.Shell) != nil {
		return fallback
	}
	return a.Shell
}
