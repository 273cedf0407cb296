package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// ErrDiskFull is returned by writes refused because the store's disk has
// less free space than the store keeps (Options.MinFreeSpace).
var ErrDiskFull = errors.New("disk full")

// spaceCheckEvery is how long a measure of the free space is trusted, less
// what was written since.
const spaceCheckEvery = 50 * time.Millisecond

// spaceGuard stops the store's writes short of a full disk. Badger writes
// its value log, memtables and tables through memory-mapped sparse files:
// on a full disk such a write is a SIGBUS, which kills the whole process
// (TestFullDisk found it). So:
//   - below floor, enqueues are refused with ErrDiskFull (the request is
//     answered 503 and the sender retries);
//   - below floor/2, Badger writes are refused too. What is already queued
//     (a flush, a compaction, the journal's table moving into Badger) then
//     still has the rest to run in.
//
// Another process that fills the disk past both is not stopped by this.
type spaceGuard struct {
	dir   string
	floor int64
	log   *slog.Logger
	free  func(dir string) (int64, error) // freeSpace, or Options.diskFree
	now   func() time.Time

	mu    sync.Mutex
	left  int64     // free bytes at the last measure, less what was written since
	at    time.Time // of the last measure
	full  bool      // refusing, as last logged
	blind bool      // the last measure failed, as logged
}

// newSpaceGuard is the guard of a store opened with o (defaults set); nil
// when o.MinFreeSpace is negative.
func newSpaceGuard(o Options) *spaceGuard {
	if o.MinFreeSpace <= 0 {
		return nil
	}
	g := &spaceGuard{dir: o.Dir, floor: o.MinFreeSpace, log: o.Logger, free: o.diskFree, now: o.Clock}
	if g.free == nil {
		g.free = freeSpace
	}
	return g
}

// room reports ErrDiskFull when writing about need bytes would leave less
// than keep (floor for enqueues, floor/2 for Badger writes) free.
func (g *spaceGuard) room(need, keep int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	// A refusal measures again at once: a freed disk is noticed by the
	// next write, not after spaceCheckEvery.
	if g.now().Sub(g.at) >= spaceCheckEvery || g.left-need < keep {
		free, err := g.free(g.dir)
		if err != nil {
			// A filesystem that cannot say is not refused; said once.
			if !g.blind {
				g.log.Warn("store: measuring free disk space failed; not checked until it works", "dir", g.dir, "error", err)
			}
			free = 1 << 62
		}
		g.blind = err != nil
		g.left, g.at = free, g.now()
	}
	if g.left-need < keep {
		if !g.full {
			g.full = true
			g.log.Error("store: disk nearly full; refusing writes until space is freed",
				"dir", g.dir, "free_bytes", g.left, "min_free_space", g.floor)
		}
		return fmt.Errorf("%w: %d bytes free under %s, the store keeps %d", ErrDiskFull, g.left, g.dir, keep)
	}
	if g.full && g.left >= g.floor {
		g.full = false
		g.log.Warn("store: disk space freed; writes resumed", "dir", g.dir, "free_bytes", g.left)
	}
	g.left -= need
	return nil
}

// wrote counts n bytes written since the last measure.
func (g *spaceGuard) wrote(n int64) {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.left -= n
	g.mu.Unlock()
}

// enqueue is room for an enqueue of need bytes. A nil guard (MinFreeSpace
// < 0) refuses nothing, here and in write and wrote.
func (g *spaceGuard) enqueue(need int64) error {
	if g == nil {
		return nil
	}
	return g.room(need, g.floor)
}

// write is room for a Badger write of need bytes: every writer of Badger
// asks (the committer, the notification log, the value-log GC).
func (g *spaceGuard) write(need int64) error {
	if g == nil {
		return nil
	}
	return g.room(need, g.floor/2)
}
