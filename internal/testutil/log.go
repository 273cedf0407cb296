package testutil

import (
	"bytes"
	"log/slog"
	"sync"
)

// LogBuffer collects log output (of a logger, or of a process as its
// Stdout and Stderr) for a test to read while it is still being written.
// It is safe for concurrent use; the zero value is ready.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Slog is a logger that writes text lines into b, debug level included.
func (b *LogBuffer) Slog() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
