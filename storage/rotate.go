package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// RotateKey re-encrypts the store's data keys from oldKey to newKey (both 32
// bytes), as Badger's own `badger rotate` does: the data stays as it is, only
// the key registry that wraps the per-table data keys is rewritten. The store
// must not be open: RotateKey takes Badger's directory lock to make sure.
func RotateKey(dir string, oldKey, newKey []byte) error {
	if len(oldKey) != 32 || len(newKey) != 32 {
		return fmt.Errorf("rotate key %s: both keys must be 32 bytes", dir)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return fmt.Errorf("rotate key %s: %w", dir, err)
	}
	defer unlock()
	opt := registryOptions(dir, oldKey)
	kr, err := badger.OpenKeyRegistry(opt)
	if err != nil {
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
			return fmt.Errorf("rotate key %s: the old key is not the key this store is encrypted with", dir)
		}
		return fmt.Errorf("rotate key %s: open key registry: %w", dir, err)
	}
	defer kr.Close()
	// The journal's data key (journalkey.go) and the notification log's
	// registry are wrapped by the store key too. They go first, and each
	// finds itself done when a rotation is run again after a failure.
	if err := rotateJournalKey(dir, oldKey, newKey); err != nil {
		return fmt.Errorf("rotate key %s: %w", dir, err)
	}
	if err := rotateNotesRegistry(filepath.Join(dir, notificationsDir), oldKey, newKey); err != nil {
		return fmt.Errorf("rotate key %s: notification log: %w", dir, err)
	}
	opt.EncryptionKey = newKey
	if err := badger.WriteKeyRegistry(kr, opt); err != nil {
		return fmt.Errorf("rotate key %s: write key registry: %w", dir, err)
	}
	return nil
}

func registryOptions(dir string, key []byte) badger.KeyRegistryOptions {
	return badger.KeyRegistryOptions{
		Dir:                           dir,
		ReadOnly:                      true,
		EncryptionKey:                 key,
		EncryptionKeyRotationDuration: 10 * 24 * time.Hour,
	}
}

// rotateNotesRegistry rewraps the notification log's data keys, unless its
// registry is already wrapped by newKey, or it has none yet (a store not
// opened since the log has its own database).
func rotateNotesRegistry(dir string, oldKey, newKey []byte) error {
	if _, err := os.Stat(filepath.Join(dir, badger.KeyRegistryFileName)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if kr, err := badger.OpenKeyRegistry(registryOptions(dir, newKey)); err == nil {
		return kr.Close() // rotated already, by a rotation that failed after it
	}
	opt := registryOptions(dir, oldKey)
	kr, err := badger.OpenKeyRegistry(opt)
	if err != nil {
		return fmt.Errorf("open key registry: %w", err)
	}
	defer kr.Close()
	opt.EncryptionKey = newKey
	if err := badger.WriteKeyRegistry(kr, opt); err != nil {
		return fmt.Errorf("write key registry: %w", err)
	}
	return nil
}

// lockDir takes the flock Badger takes on the folder itself, so a rotation
// cannot run under a live Caddy.
func lockDir(dir string) (func(), error) {
	if _, err := os.Stat(filepath.Join(dir, badger.KeyRegistryFileName)); err != nil {
		return nil, fmt.Errorf("not a postback store (no %s): %w", badger.KeyRegistryFileName, err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("the store is in use (stop Caddy first): %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
