package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Options configure Open. Only Dir is required; the tuning knobs default to
// values measured for a small sidecar (docs/performance-history.md, "Storage tuning").
type Options struct {
	Dir           string
	EncryptionKey []byte        // nil, or 32 bytes: AES-256 at rest (Badger's encryption)
	Retention     time.Duration // delivered/spooled records are kept this long (default 30 days)
	Logger        *slog.Logger  // nil: discard; Badger's warnings and errors go here too

	// HourlyRetention is how long hourly buckets are kept (default 8 days).
	HourlyRetention time.Duration
	// MaxBatch bounds the operations gathered into one group commit (default 1024).
	MaxBatch int
	// MemTableSize is Badger's memtable (and write-ahead file) size (default
	// 4 MiB). One group commit can hold at most 15 % of it.
	MemTableSize int64
	// NumMemtables is how many full memtables may wait for their flush before
	// writes stall (default 1).
	NumMemtables int
	// BlockCacheSize (default 4 MiB; used only with encryption) and
	// IndexCacheSize (default 8 MiB) bound Badger's caches.
	BlockCacheSize int64
	IndexCacheSize int64
	// ValueLogFileSize is the size of one value-log file (default 64 MiB).
	ValueLogFileSize int64
	// ValueThreshold: values of at least this size (payloads, in practice) go
	// to the value log, smaller ones (records, indexes) stay in the LSM tree
	// (default 512 bytes). Payloads in the value log are written once and never
	// rewritten by compaction, which keeps compaction's memory small.
	ValueThreshold int64
	// LazyDelay is how long delivery outcomes and maintenance writes may wait
	// for an enqueue (or another urgent write) to share its synced commit,
	// when nothing urgent is being written (default 2 ms; negative: no wait).
	// Under mixed traffic it halves the synced commits; it never delays an
	// enqueue.
	LazyDelay time.Duration
	// Clock replaces time.Now (tests).
	Clock func() time.Time
	// MinFreeSpace is the free space the store keeps on its disk (default
	// 256 MiB): below it enqueues fail with ErrDiskFull, below half of it
	// every write does (diskspace.go says why). Negative: no check.
	MinFreeSpace int64

	// The journal (journaled.go): JournalSegmentSize is the size of one of
	// its segment files (default 64 MiB). FreshCount and FreshBytes bound
	// the deliveries it holds in memory until Badger has them (defaults
	// 16384 and 16 MiB of payload); FreshAge is how long one may wait there
	// for its first attempt before it is moved into Badger (default 5 s).
	// AbsorbDelay is how long a completion may wait for others to share its
	// write into Badger (default 25 ms: Badger's synced commits, and their msync, then come
	// tens of times a second however many deliveries complete).
	JournalSegmentSize int
	FreshCount         int
	FreshBytes         int
	FreshAge           time.Duration
	AbsorbDelay        time.Duration

	// noJournal makes Enqueue write Badger, synced, as before the journal
	// (benchmarks and the tests that compare the two).
	noJournal bool
	// releaseEvery is how often the journal's head is released (default
	// releaseEvery; the crash tests shorten it).
	releaseEvery time.Duration
	// diskFree replaces freeSpace (the tests of MinFreeSpace).
	diskFree func(dir string) (int64, error)
	// crashClose makes Close leave the journal as a crash would (the tests
	// of the replay).
	crashClose bool

	// syncPerBatch selects SyncWrites=false plus one db.Sync per group commit
	// instead of Badger's SyncWrites. It measured no faster (docs/performance-history.md) and
	// leaves a window in which a concurrent value-log GC write could rotate
	// the memtable before our Sync, so it is kept for benchmarks only.
	syncPerBatch bool
	// purgeScan bounds the records one purge read examines, so that a long
	// run of old records kept for a retry never holds one read transaction
	// for long (default 16384; tests lower it).
	purgeScan int
	// tune adjusts Badger's options last (tests and tuning experiments).
	tune func(badger.Options) badger.Options
}

const (
	defaultRetention       = 30 * 24 * time.Hour
	defaultHourlyRetention = 8 * 24 * time.Hour
	defaultMaxBatch        = 1024
	defaultLazyDelay       = 2 * time.Millisecond
	schemaVersion          = "2"
	// defaultMinFreeSpace leaves, below the enqueues' floor, room for what
	// Badger may still write: a value-log GC's new file (64 MiB), memtable
	// flushes and compactions, and the journal's table (2 × 16 MiB).
	defaultMinFreeSpace = 256 << 20
)

func (o *Options) setDefaults() {
	if o.Retention <= 0 {
		o.Retention = defaultRetention
	}
	if o.HourlyRetention <= 0 {
		o.HourlyRetention = defaultHourlyRetention
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = defaultMaxBatch
	}
	if o.MemTableSize <= 0 {
		o.MemTableSize = 4 << 20
	}
	if o.NumMemtables <= 0 {
		o.NumMemtables = 1
	}
	if o.BlockCacheSize <= 0 {
		o.BlockCacheSize = 4 << 20
	}
	if o.IndexCacheSize <= 0 {
		o.IndexCacheSize = 8 << 20
	}
	if o.ValueLogFileSize <= 0 {
		o.ValueLogFileSize = 64 << 20
	}
	if o.ValueThreshold <= 0 {
		o.ValueThreshold = 512
	}
	// Badger refuses a threshold above its largest transaction (15 % of a memtable).
	o.ValueThreshold = min(o.ValueThreshold, 15*o.MemTableSize/100)
	if o.LazyDelay == 0 {
		o.LazyDelay = defaultLazyDelay
	}
	if o.purgeScan <= 0 {
		o.purgeScan = 64 * purgeChunk
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.JournalSegmentSize <= 0 {
		o.JournalSegmentSize = defaultJournalSegment
	}
	if o.FreshCount <= 0 {
		o.FreshCount = defaultFreshCount
	}
	if o.FreshBytes <= 0 {
		o.FreshBytes = defaultFreshBytes
	}
	if o.FreshAge <= 0 {
		o.FreshAge = defaultFreshAge
	}
	if o.AbsorbDelay <= 0 {
		o.AbsorbDelay = defaultAbsorbDelay
	}
	if o.releaseEvery <= 0 {
		o.releaseEvery = releaseEvery
	}
	if o.MinFreeSpace == 0 {
		o.MinFreeSpace = defaultMinFreeSpace
	}
}

// Store is the durable delivery queue. All mutations go through one committer
// goroutine (committer.go); reads use Badger snapshots directly.
type Store struct {
	opts  Options
	db    *badger.DB
	notes *badger.DB // the notification log's own database (notificationdb.go)
	log   *slog.Logger
	space *spaceGuard // nil: MinFreeSpace < 0

	// closeMu guards closed and db use against Close: readers and submitters
	// hold it shared, Close exclusively.
	closeMu sync.RWMutex
	closed  bool
	ops     chan *pending
	done    chan struct{} // closed when the committer has exited

	// maxSize/maxCount bound one Badger transaction (Badger's own limits).
	maxSize, maxCount int64

	// lastNs is the time part of the last id issued (idMu).
	idMu   sync.Mutex
	lastNs int64

	// The journal (journaled.go); nil with noJournal. jops feeds its
	// appender, absorbs its absorber; jnext is the index after the last
	// entry handed to fresh; released is how far its head was released
	// (journalLoop only).
	journal   *journal
	closing   bool // Close has begun: no Enqueue (closeMu)
	fresh     *freshTable
	jops      chan *jpending
	absorbs   chan *absorbReq
	jnext     atomic.Uint64
	spilled   atomic.Uint64 // deliveries moved into Badger unattempted (metrics)
	replayed  int           // deliveries the journal gave back at Open (tests)
	jcommits  atomic.Uint64 // the journal's group commits (metrics, benchmarks)
	released  uint64
	spillKick chan struct{}
	bgstop    chan struct{}
	jdone     chan struct{} // closed when the appender has exited
	adone     chan struct{} // … the absorber
	bgdone    chan struct{} // … the journal's maintenance

	// countersMu guards counters, which change only when a batch commits.
	countersMu sync.Mutex
	counters   map[string]*dinCounters

	due dueHints

	// batches counts group commits that wrote something (tests, benchmarks).
	batches atomic.Int64
	// beforeCommit is a test hook run by the committer before each commit.
	beforeCommit func()
}

// Open opens (or creates) the store in opts.Dir.
func Open(opts Options) (*Store, error) {
	opts.setDefaults()
	dir := opts.Dir
	if dir == "" {
		return nil, errors.New("open store: no directory given")
	}
	if n := len(opts.EncryptionKey); n != 0 && n != 32 {
		return nil, fmt.Errorf("open store %s: encryption key must be 32 bytes, got %d", dir, n)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	// The folder is what keeps other users out: Badger creates its files with
	// 0666 minus umask, which tightenPerms corrects afterwards.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}

	bo := badgerOptions(dir, opts.Logger, opts.EncryptionKey).
		WithSyncWrites(!opts.syncPerBatch).
		WithMemTableSize(opts.MemTableSize).
		WithNumMemtables(opts.NumMemtables).
		WithBlockCacheSize(opts.BlockCacheSize).
		WithIndexCacheSize(opts.IndexCacheSize).
		WithValueLogFileSize(opts.ValueLogFileSize).
		WithValueThreshold(opts.ValueThreshold)
	if opts.tune != nil {
		bo = opts.tune(bo)
	}
	if err := removeEmptyLogs(dir, opts.Logger); err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	db, err := badger.Open(bo)
	if err != nil {
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
			return nil, fmt.Errorf("open store %s: wrong encryption key (the store was created with a different key, or with/without one): %w", dir, err)
		}
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	s := &Store{
		opts:     opts,
		db:       db,
		log:      opts.Logger,
		ops:      make(chan *pending, opts.MaxBatch),
		done:     make(chan struct{}),
		maxSize:  db.MaxBatchSize(),
		maxCount: db.MaxBatchCount(),
		counters: make(map[string]*dinCounters),
		space:    newSpaceGuard(opts),
	}
	s.due.init()
	if err := s.openNotes(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	if err := s.load(); err != nil {
		db.Close()
		s.notes.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	go s.commitLoop()
	if !opts.noJournal {
		if err := s.openJournal(); err != nil {
			s.closeBadger()
			return nil, fmt.Errorf("open store %s: %w", dir, err)
		}
	}
	s.tightenPerms()
	return s, nil
}

// badgerOptions are the settings the queue's database and the notification
// log's share (docs/performance-history.md, "Storage tuning").
func badgerOptions(dir string, log *slog.Logger, key []byte) badger.Options {
	bo := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		WithMetricsEnabled(false).  // Badger's metrics are process-global expvars
		WithDetectConflicts(false). // one writer: there is nothing to conflict with
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithBaseTableSize(1 << 20).
		// Every memtable flush is compacted into the base level, rewriting
		// the part of it that its keys span; a 2 MiB base level (Badger's
		// default is 10) keeps each such burst short, which is what sets the
		// request path's tail latency on a store that has grown
		// (docs/performance-history.md, section 2).
		WithBaseLevelSize(2 << 20).
		// Payloads live in the value log, uncompressed whatever this says;
		// compressing the small LSM saves little disk and costs builder memory.
		WithCompression(options.None)
	if len(key) > 0 {
		bo = bo.WithEncryptionKey(key)
	}
	return bo
}

// openJournal opens the journal, replays what Badger does not hold, and
// starts the journal's goroutines.
func (s *Store) openJournal() error {
	j, err := openJournal(journalPath(s.opts.Dir), s.opts.EncryptionKey, s.opts.JournalSegmentSize, s.log)
	if err != nil {
		return err
	}
	s.journal = j
	s.fresh = newFreshTable(s.opts.FreshCount, s.opts.FreshBytes)
	n, err := s.replayJournal()
	if err != nil {
		j.close()
		return err
	}
	if n > 0 {
		s.log.Info("journal replayed: deliveries whose outcome was not recorded are pending again", "count", n)
	}
	s.replayed = n
	s.released = j.next
	s.jnext.Store(j.next)
	s.jops = make(chan *jpending, s.opts.MaxBatch)
	s.absorbs = make(chan *absorbReq, absorbMax)
	s.spillKick = make(chan struct{}, 1)
	s.bgstop = make(chan struct{})
	s.jdone, s.adone, s.bgdone = make(chan struct{}), make(chan struct{}), make(chan struct{})
	go s.appendLoop()
	go s.absorbLoop()
	go s.journalLoop()
	return nil
}

// load reads what Open needs: the schema version, the per-DIN counters and the
// newest id. It reads O(number of DINs) keys, never the records, so that a
// store with a million pending deliveries opens at once.
func (s *Store) load() error {
	if err := s.migrate(); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	return s.db.View(func(txn *badger.Txn) error {
		if err := s.loadCounters(txn); err != nil {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfxDelivery}, Reverse: true})
		defer it.Close()
		it.Seek([]byte{pfxDelivery, 0xff})
		if it.Valid() {
			var last id
			copy(last[:], it.Item().Key()[1:])
			s.lastNs = last.time().UnixNano()
		}
		return nil
	})
}

// migrate brings the store to schemaVersion. Schema 1 → 2 drops the two
// record indexes (keys.go); dropping is idempotent, so a crash before the
// new version is written only repeats it.
func (s *Store) migrate() error {
	var v string
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaKey("schema"))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		b, err := item.ValueCopy(nil)
		v = string(b)
		return err
	})
	switch {
	case err != nil:
		return err
	case v == schemaVersion:
		return nil
	case v == "1":
		if err := s.db.DropPrefix(schema1Indexes...); err != nil {
			return fmt.Errorf("drop schema 1 indexes: %w", err)
		}
		s.log.Info("store migrated: schema 1 indexes dropped", "schema", schemaVersion)
	case v != "":
		return fmt.Errorf("unknown schema version %q", v)
	}
	return s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(metaKey("schema"), []byte(schemaVersion))
	})
}

func (s *Store) loadCounters(txn *badger.Txn) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfxStats}})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		din, _, ok := readDIN(it.Item().Key()[1:])
		if !ok {
			return fmt.Errorf("bad counters key %x", it.Item().Key())
		}
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return err
		}
		c, err := decodeCounters(v)
		if err != nil {
			return fmt.Errorf("counters of DIN %s: %w", din, err)
		}
		s.counters[din] = &c
	}
	return nil
}

// Close stops the committer (after it has answered what was already queued)
// and closes the database. Later calls return ErrClosed.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed || s.closing {
		s.closeMu.Unlock()
		return ErrClosed
	}
	if s.journal == nil {
		s.closeMu.Unlock()
		return s.finishClose(nil)
	}
	s.closing = true // Enqueue refuses from here on
	close(s.jops)
	close(s.bgstop)
	s.closeMu.Unlock()
	// The appender finishes the groups already sent (durable in the
	// journal), then the journal's deliveries go into Badger, so that the
	// next Open has nothing to replay; what cannot go stays in the journal
	// for it.
	<-s.jdone
	<-s.bgdone
	if !s.opts.crashClose {
		if err := s.settleJournal(); err != nil {
			s.log.Warn("journal: deliveries not moved into the store at close; the next start replays them", "error", err)
		}
	}
	s.closeMu.Lock()
	s.closed = true
	close(s.absorbs)
	s.closeMu.Unlock()
	<-s.adone
	return s.finishClose(s.journal.close())
}

// finishClose closes Badger after the journal (closed with jerr).
func (s *Store) finishClose(jerr error) error {
	err := s.closeBadger()
	s.tightenPerms()
	if err := errors.Join(jerr, err); err != nil {
		return fmt.Errorf("close store %s: %w", s.opts.Dir, err)
	}
	return nil
}

// closeBadger stops the committer and closes Badger; closed is set.
func (s *Store) closeBadger() error {
	s.closeMu.Lock()
	s.closed = true
	close(s.ops)
	s.closeMu.Unlock()
	<-s.done
	return errors.Join(s.db.Close(), s.notes.Close())
}

// read runs f unless the store is closed, keeping Close out meanwhile.
func (s *Store) read(f func() error) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return f()
}

func (s *Store) now() time.Time { return norm(s.opts.Clock()) }

// DiskUsage returns the bytes on disk of the LSM tree (tables and
// write-ahead memtables) and of the value log, from the files in Dir
// (allocated blocks, not apparent sizes: Badger preallocates sparsely).
func (s *Store) DiskUsage() (lsm, vlog int64) {
	_ = filepath.WalkDir(s.opts.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		switch filepath.Ext(path) {
		case ".sst", ".mem":
			lsm += allocated(info)
		case ".vlog":
			vlog += allocated(info)
		}
		return nil
	})
	return lsm, vlog
}

// tightenPerms sets every file in Dir to 0600. Badger creates files with
// 0666 minus umask and offers no hook; the 0700 folder already keeps other
// users out, this makes the files themselves private as well.
func (s *Store) tightenPerms() {
	_ = filepath.WalkDir(s.opts.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		info, err := d.Info()
		if err != nil || info.Mode().Perm() == want {
			return nil
		}
		if err := os.Chmod(path, want); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("cannot tighten store file mode", "path", path, "error", err)
		}
		return nil
	})
}

// badgerLogger passes Badger's warnings and errors to slog and drops the rest.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}

func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
