package nsjoin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
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
	if strings.ContainsAny(line, "\n\x00") {
		return Account{}, fmt.Errorf("%w: newline or NUL", ErrBadPasswdLine)
	}
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

// maxAccountFile bounds how much of a machine's passwd or group file is
// read, maxAccountLine a line of it.
const (
	maxAccountFile = 16 << 20
	maxAccountLine = 64 << 10
)

// FindAccount returns the first account in a passwd file for which match
// is true. Malformed lines are passed over, as the C library does.
func FindAccount(r io.Reader, match func(Account) bool) (Account, bool, error) {
	sc := bufio.NewScanner(io.LimitReader(r, maxAccountFile))
	sc.Buffer(make([]byte, 4096), maxAccountLine)
	for sc.Scan() {
		a, err := ParsePasswdLine(sc.Text())
		if err == nil && match(a) {
			return a, true, nil
		}
	}
	return Account{}, false, sc.Err()
}

// Group is one line of a group file.
type Group struct {
	Name    string
	GID     uint32
	Members []string
}

// ParseGroupLine parses "name:password:gid:member,member".
func ParseGroupLine(line string) (Group, error) {
	if strings.ContainsAny(line, "\n\x00") {
		return Group{}, fmt.Errorf("%w: newline or NUL", ErrBadGroupLine)
	}
	f := strings.Split(line, ":")
	if len(f) != 4 || f[0] == "" {
		return Group{}, fmt.Errorf("%w: want 4 fields", ErrBadGroupLine)
	}
	gid, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil {
		return Group{}, fmt.Errorf("%w: gid %q", ErrBadGroupLine, f[2])
	}
	g := Group{Name: f[0], GID: uint32(gid)}
	for _, m := range strings.Split(f[3], ",") {
		if m != "" {
			g.Members = append(g.Members, m)
		}
	}
	return g, nil
}

// ErrBadGroupLine is wrapped by ParseGroupLine's errors.
var ErrBadGroupLine = errors.New("malformed group line")

// eachGroup calls fn for each well-formed line of a group file until fn returns false.
func eachGroup(r io.Reader, fn func(Group) bool) error {
	sc := bufio.NewScanner(io.LimitReader(r, maxAccountFile))
	sc.Buffer(make([]byte, 4096), maxAccountLine)
	for sc.Scan() {
		if g, err := ParseGroupLine(sc.Text()); err == nil && !fn(g) {
			return nil
		}
	}
	return sc.Err()
}

// User is who the command runs as inside the machine.
type User struct {
	Account
	Groups []uint32 // supplementary groups, the primary one included
}

// ErrNoUser: the user or group named is not in the machine's files.
var ErrNoUser = errors.New("no such user or group")

const fallbackShell = "/bin/sh"

// LookupAccount finds user, a name or number, in the machine's
// /etc/passwd. A number with no account is allowed (home "/", shell
// /bin/sh). An empty home is "/"; a shell that is not an absolute path to
// an executable file of the machine is /bin/sh.
func (m *Machine) LookupAccount(user string) (Account, error) {
	if user == "" {
		return Account{}, fmt.Errorf("%w: empty user name", ErrNoUser)
	}
	uid, numeric := parseID(user)
	acct, found, err := m.findAccount(func(a Account) bool {
		if numeric {
			return a.UID == uid
		}
		return a.Name == user
	})
	if err != nil {
		return Account{}, err
	}
	switch {
	case found:
	case numeric:
		acct = Account{Name: user, UID: uid, GID: uid, Home: "/"}
	default:
		return Account{}, fmt.Errorf("%w: no user %q in the machine's /etc/passwd", ErrNoUser, user)
	}
	if acct.Home == "" {
		acct.Home = "/"
	}
	if !strings.HasPrefix(acct.Shell, "/") || !m.IsExecutable(acct.Shell) {
		acct.Shell = fallbackShell
	}
	return acct, nil
}

// LookupUser resolves spec, "USER[:GROUP]" where USER and GROUP are names
// or numbers, in the machine's /etc/passwd (see LookupAccount) and
// /etc/group. Without GROUP the primary group is the account's and the
// supplementary groups are those that list the user as a member.
func (m *Machine) LookupUser(spec string) (User, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" || hasGroup && groupPart == "" {
		return User{}, fmt.Errorf("%w: %q: want USER or USER:GROUP", ErrNoUser, spec)
	}
	acct, err := m.LookupAccount(userPart)
	if err != nil {
		return User{}, err
	}
	u := User{Account: acct}
	if hasGroup {
		gid, numeric := parseID(groupPart)
		if !numeric {
			g, ok, err := m.findGroup(func(g Group) bool { return g.Name == groupPart })
			if err != nil {
				return User{}, err
			}
			if !ok {
				return User{}, fmt.Errorf("%w: no group %q in the machine's /etc/group", ErrNoUser, groupPart)
			}
			gid = g.GID
		}
		u.GID, u.Groups = gid, []uint32{gid}
		return u, nil
	}
	u.Groups = []uint32{u.GID}
	f, err := m.Open("/etc/group")
	if err != nil {
		return u, nil // no group file: the primary group only
	}
	defer f.Close()
	err = eachGroup(f, func(g Group) bool {
		if g.GID != u.GID && slices.Contains(g.Members, u.Name) && !slices.Contains(u.Groups, g.GID) {
			u.Groups = append(u.Groups, g.GID)
		}
		return len(u.Groups) < maxGroups
	})
	return u, fileError("/etc/group", err)
}

// maxGroups is the kernel's NGROUPS_MAX.
const maxGroups = 65536

func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil && n != 0xFFFFFFFF
}

func (m *Machine) findAccount(match func(Account) bool) (Account, bool, error) {
	f, err := m.Open("/etc/passwd")
	if err != nil {
		return Account{}, false, nil
	}
	defer f.Close()
	a, ok, err := FindAccount(f, match)
	return a, ok, fileError("/etc/passwd", err)
}

// fileError names the machine's file in err, and says what a line too long
// for the scanner means.
func fileError(path string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, bufio.ErrTooLong):
		return fmt.Errorf("the machine's %s has a line longer than %d KiB", path, maxAccountLine>>10)
	}
	return fmt.Errorf("read the machine's %s: %w", path, err)
}

func (m *Machine) findGroup(match func(Group) bool) (Group, bool, error) {
	f, err := m.Open("/etc/group")
	if err != nil {
		return Group{}, false, nil
	}
	defer f.Close()
	var found Group
	ok := false
	err = eachGroup(f, func(g Group) bool {
		if match(g) {
			found, ok = g, true
		}
		return !ok
	})
	return found, ok, fileError("/etc/group", err)
}
