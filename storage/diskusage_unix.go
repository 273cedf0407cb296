//go:build unix

package storage

import (
	"fmt"
	"io/fs"
	"syscall"
)

// allocated returns the bytes a file occupies on disk. Badger preallocates
// its value-log and memtable files sparsely (2×ValueLogFileSize for a value
// log), so the apparent size overstates what is used.
func allocated(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return info.Size()
}

// freeSpace returns the bytes an unprivileged process may still write on
// the filesystem holding dir.
func freeSpace(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
