//go:build !unix

package storage

import "io/fs"

// allocated returns the file's size where block counts are not available.
func allocated(info fs.FileInfo) int64 { return info.Size() }
