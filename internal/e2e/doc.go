// Package e2e tests the built nspawn-enter and nspawn-stop programs end
// to end, by machine name, on real systemd-nspawn machines registered with
// a real systemd-machined (started by internal/machinetest). It has only
// tests.
package e2e
