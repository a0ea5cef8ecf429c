package main_test

import (
	"testing"

	"github.com/nspawn-tools/nspawn-tools/internal/nstest"
)

// benchTrue runs /bin/true in a user-namespaced target with the tool at
// index i of tools(b) (0: nsenter, 1: nspawn-enter).
func benchTrue(b *testing.B, i int) {
	tg := nstest.Start(b, nstest.Spec{Name: "bench", User: true})
	tl := tools(b)[i]
	argv := tl.argv(b, tg.PID, "/bin/true")
	b.ResetTimer()
	for b.Loop() {
		if r := run(b, "", argv[0], argv[1:]...); r.status() != "exit 0" {
			b.Fatalf("%v", r)
		}
	}
}

// BenchmarkEnterTrue times `nspawn-enter --pid P -- /bin/true`.
func BenchmarkEnterTrue(b *testing.B) { benchTrue(b, 1) }

// BenchmarkNsenterTrue times `nsenter -t P -a /bin/true`, for comparison.
func BenchmarkNsenterTrue(b *testing.B) { benchTrue(b, 0) }
