package storage

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// removeEmptyValueLogs deletes value-log files of zero bytes before Badger
// opens dir. Badger creates a new value-log file at every open (and when one
// is full) and writes its header only after the file exists: a process
// killed in between leaves an empty file that Badger v4 then refuses to open
// ("Open existing file … Create a new file"), for good.
// TestJournalKill9AtRandomPoints, which kills during Open, found it. An empty
// file holds no value, so nothing can point into it.
func removeEmptyValueLogs(dir string, log *slog.Logger) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		return err
	}
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil || fi.Size() != 0 {
			continue
		}
		if err := os.Remove(f); err != nil {
			return fmt.Errorf("remove the empty value log a crash left: %w", err)
		}
		log.Warn("removed an empty value-log file left by a crash during a start", "file", f)
	}
	return nil
}
