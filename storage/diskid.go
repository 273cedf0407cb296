package storage

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// diskIDFile holds the store folder's identity, beside Badger's files.
const diskIDFile = "edge-id"

// DiskID returns the identity of the store folder dir, created on first
// use: a fleet tells a restart of the same edge (same disk, hence the same
// id) from another edge that uses the same node name. It stays with the
// folder, so a copied folder carries it: give a cloned machine a fresh one
// by deleting the file.
func DiskID(dir string) (string, error) {
	path := filepath.Join(dir, diskIDFile)
	b, err := os.ReadFile(path)
	if err == nil {
		if id := strings.TrimSpace(string(b)); len(id) == 32 {
			return id, nil
		}
		return "", fmt.Errorf("disk id %s: malformed (delete it to get a new one)", path)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("disk id: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("disk id: %w", err)
	}
	raw := make([]byte, 16)
	_, _ = rand.Read(raw)
	id := hex.EncodeToString(raw)
	// Written to a temporary name and renamed, so a crash leaves no half id.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("disk id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("disk id: %w", err)
	}
	return id, nil
}
