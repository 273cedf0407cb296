//go:build unix

package storage

import (
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
