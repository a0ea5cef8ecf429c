// Package machinetest brings up real systemd-nspawn machines, registered
// with a real systemd-machined, for end-to-end tests and demos.
//
// It starts a system dbus-daemon and systemd-machined when none answers
// (and stops only those, by PID, in Shutdown), builds and caches root file
// systems (busybox; Debian with systemd, runit, s6 and OpenRC), boots every
// machine from a throwaway overlay in a unit-named cgroup, waits until its
// init is ready to take signals, and removes everything it made when the
// machine is closed: processes, cgroups, state file, mounts and scratch.
//
// Everything needs root. Tests use Start, which registers the cleanup with
// the test; programs use Launch and Machine.Close.
package machinetest
