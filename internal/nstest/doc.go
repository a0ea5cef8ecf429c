// Package nstest starts test targets that look like systemd-nspawn
// containers: a long-running PID 1 of its own mount, UTS, IPC, network, PID
// and cgroup namespaces, pivot_root'ed into a tmpfs rootfs, optionally with a
// user namespace mapped like `systemd-nspawn -U` and a time namespace with
// clock offsets. Tests enter them with the product and with util-linux
// nsenter and compare what they see.
//
// Targets are made with util-linux unshare (a test tool, never used by the
// product) and, for the user namespace, Go's SysProcAttr. Every target is
// torn down by t.Cleanup: nothing stays running or mounted.
package nstest
