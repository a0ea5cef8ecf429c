package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// size reports the size of both tools, built as the README builds them.
func (b *bench) size() {
	for _, bin := range []string{b.enter, b.stop} {
		what := fmt.Sprintf("size: %s (`CGO_ENABLED=0 go build -trimpath -ldflags='-s -w'`)", filepath.Base(bin))
		fi, err := os.Stat(bin)
		if err != nil {
			b.fail(secSize, what, err)
			continue
		}
		ref := "—"
		if e, err := os.Stat(b.emptyGo); err == nil {
			ref = fmt.Sprintf("empty static Go program: %d bytes (%s)", e.Size(), mib(e.Size()))
		}
		b.add(secSize, what, fmt.Sprintf("%d bytes (%s)", fi.Size(), mib(fi.Size())), ref, "goal ≤ 4 MiB", verdict(fi.Size() <= 4<<20))
	}
}
