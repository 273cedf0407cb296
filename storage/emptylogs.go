package storage

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// removeEmptyLogs deletes value-log and memtable files of zero bytes before
// Badger opens dir. Badger creates a new value-log file at every open (and a
// memtable file, and either when one is full) and writes its header only
// after the file exists: a process killed in between leaves an empty file
// that Badger v4 then refuses to open ("Open existing file … Create a new
// file", "while opening memtables … Create a new file"), for good.
// TestJournalKill9AtRandomPoints, which kills during Open, found both. An
// empty file holds no entry, so nothing can point into it.
func removeEmptyLogs(dir string, log *slog.Logger) error {
	for _, ext := range []string{"*.vlog", "*.mem"} {
		files, err := filepath.Glob(filepath.Join(dir, ext))
		if err != nil {
			return err
		}
		for _, f := range files {
			fi, err := os.Stat(f)
			if err != nil || fi.Size() != 0 {
				continue
			}
			if err := os.Remove(f); err != nil {
				return fmt.Errorf("remove the empty log file a crash left: %w", err)
			}
			log.Warn("removed an empty log file left by a crash during a start", "file", f)
		}
	}
	return nil
}
