package storage

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
)

// The journal is the request path's durability point (docs/journal.md): each
// new delivery is appended, record and payload, as one entry of a
// write-ahead log, and a group of them is made durable by one fsync. The
// segment files, their checksums, the cutting of a torn tail and the release
// of whole segments from the head are hashicorp/raft-wal's; the entries are
// ours (journalframe.go), sealed with a journal key that the store key wraps
// (journalkey.go).

// journalDir is the journal's folder inside the store folder.
const journalDir = "journal"

// defaultJournalSegment is the size of one segment file (raft-wal's
// default): at 1,000 notifications of 1 KiB a second, one a minute. Each
// rotation holds the appends for a metadata commit and a new file's
// preallocation; at 16 MiB they came every 14 s and showed at the p99
// (docs/performance-history.md, "The journal").
const defaultJournalSegment = 64 << 20

type journal struct {
	seal    *sealer // nil: entries in clear (a store without encryption_key)
	dir     string
	segment int
	log     *slog.Logger
	files   *zeroedSegments // raft-wal's file system, with segments zeroed ahead

	// mu guards the WAL against a reopen (recover) under a reader.
	mu   sync.Mutex
	w    *wal.WAL
	meta *metadb.BoltMetaDB // ours to close: WAL.Close leaves it open (and locked)
	// next is the index the next entry gets; broken is set by a failed
	// append, so that the next one reopens the WAL first.
	next   uint64
	broken bool
}

// openJournal opens (or creates) the journal in dir. key is the store's
// encryption key (nil: none).
func openJournal(dir string, key []byte, segment int, log *slog.Logger) (*journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open journal %s: %w", dir, err)
	}
	seal, err := loadJournalKey(dir, key)
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", dir, err)
	}
	j := &journal{seal: seal, dir: dir, segment: segment, log: log, files: newZeroedSegments(dir, segment, log)}
	if err := j.openWAL(); err != nil {
		j.files.close()
		return nil, fmt.Errorf("open journal %s: %w", dir, err)
	}
	last, err := j.w.LastIndex()
	if err != nil {
		j.close()
		return nil, fmt.Errorf("open journal %s: %w", dir, err)
	}
	j.next = last + 1
	return j, nil
}

func (j *journal) openWAL() error {
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(j.dir,
		wal.WithMetaStore(meta),
		wal.WithSegmentFiler(segment.NewFiler(j.dir, j.files)),
		wal.WithSegmentSize(j.segment),
		wal.WithLogger(hclog.New(&hclog.LoggerOptions{
			Name:   "journal",
			Level:  hclog.Warn,
			Output: slogWriter{j.log},
		})))
	if err != nil {
		meta.Close()
		return err
	}
	j.w, j.meta = w, meta
	return nil
}

// append writes entries (already framed) as the next indexes and makes them
// durable with one fsync; it returns the index of the first. After an error
// none of them counts as written: the next append first reopens the WAL and
// cuts whatever of them reached the file (recover).
func (j *journal) append(entries [][]byte) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.broken {
		if err := j.recover(); err != nil {
			return 0, fmt.Errorf("journal append: reopening after an earlier failure: %w", err)
		}
	}
	first := j.next
	logs := make([]*raft.Log, len(entries))
	for n, e := range entries {
		logs[n] = &raft.Log{Index: first + uint64(n), Type: raft.LogCommand, Data: e}
	}
	if err := j.w.StoreLogs(logs); err != nil {
		j.broken = true
		return 0, fmt.Errorf("journal append: %w", err)
	}
	j.next = first + uint64(len(entries))
	return first, nil
}

// recover reopens the WAL (raft-wal leaves a segment it could not rotate,
// on a full disk for one, sealed for good) and truncates entries from a
// failed append, so that an Enqueue answered with an error is never
// replayed. j.mu is held.
func (j *journal) recover() error {
	_ = j.w.Close()
	_ = j.meta.Close()
	if err := j.openWAL(); err != nil {
		return err
	}
	last, err := j.w.LastIndex()
	if err != nil {
		return err
	}
	if last >= j.next {
		if err := j.w.DeleteRange(j.next, last); err != nil {
			return fmt.Errorf("cut the failed append (%d to %d): %w", j.next, last, err)
		}
	}
	j.broken = false
	j.log.Info("journal reopened after a failed append", "next_index", j.next)
	return nil
}

// bounds returns the first and last index held (0, 0 when empty).
func (j *journal) bounds() (first, last uint64, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if first, err = j.w.FirstIndex(); err != nil {
		return 0, 0, err
	}
	if last, err = j.w.LastIndex(); err != nil {
		return 0, 0, err
	}
	return first, last, nil
}

// read returns the entry at index.
func (j *journal) read(index uint64) ([]byte, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var l raft.Log
	if err := j.w.GetLog(index, &l); err != nil {
		return nil, fmt.Errorf("journal read %d: %w", index, err)
	}
	return l.Data, nil
}

// release drops the entries before index from the head: the segments that
// hold only such entries are deleted. The last entry is always kept: a head
// truncation that removes the tail segment races with raft-wal's rotation of
// it (the next append then finds its segment sealed), and keeping it costs
// one segment. Its entries are sealed like the rest.
func (j *journal) release(before uint64) error {
	if before == 0 {
		return nil
	}
	return j.dropHead(func(last uint64) uint64 { return min(before-1, last-1) })
}

// reset releases every entry, tail segment included (raft-wal starts an
// empty one); the next append keeps the sequence of indexes. Only while
// nothing appends, and with no rotation pending (at Open).
func (j *journal) reset() error {
	return j.dropHead(func(last uint64) uint64 { return last })
}

// dropHead deletes the entries from the first up to upTo(last), if any.
func (j *journal) dropHead(upTo func(last uint64) uint64) error {
	first, last, err := j.bounds()
	if err != nil || last == 0 {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	end := upTo(last)
	if end < first {
		return nil
	}
	if err := j.w.DeleteRange(first, end); err != nil {
		return fmt.Errorf("journal: drop entries %d to %d: %w", first, end, err)
	}
	return nil
}

func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	err := errors.Join(j.w.Close(), j.meta.Close())
	j.files.close()
	return err
}

// slogWriter passes raft-wal's log lines (warnings and errors only) to slog.
type slogWriter struct{ l *slog.Logger }

func (s slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	if strings.Contains(line, "[ERROR]") {
		s.l.Error(line, "component", "journal")
	} else {
		s.l.Warn(line, "component", "journal")
	}
	return len(p), nil
}

var _ io.Writer = slogWriter{}

// errJournalEntry marks an entry that cannot be read back: not a torn tail
// (raft-wal cuts those), but an entry whose seal or layout is wrong.
var errJournalEntry = errors.New("unreadable journal entry")

// journalPath is where the journal of the store in dir lives.
func journalPath(dir string) string { return filepath.Join(dir, journalDir) }
