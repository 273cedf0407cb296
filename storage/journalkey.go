package storage

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The journal's entries are sealed (AES-256-GCM) with a data key of their
// own, which the store key wraps in journal.key, as Badger wraps its data
// keys in its key registry: rotating the store key (RotateKey) rewrites that
// one small file and never the entries.

const (
	journalKeyFile    = "journal.key"
	journalKeyVersion = 1
)

var journalKeyAD = []byte("caddy-postback journal key v1")

// sealer seals and opens journal entries.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

// seal appends nonce and ciphertext of plain to dst.
func (s *sealer) seal(dst, plain []byte) []byte {
	n := s.aead.NonceSize()
	dst = append(dst, make([]byte, n)...)
	nonce := dst[len(dst)-n:]
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails (Go ≥ 1.24)
	return s.aead.Seal(dst, nonce, plain, nil)
}

func (s *sealer) open(sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, errJournalEntry
	}
	p, err := s.aead.Open(nil, sealed[:n], sealed[n:], nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errJournalEntry, err)
	}
	return p, nil
}

// loadJournalKey returns the sealer of the journal in dir, creating its data
// key on first use; nil without a store key (entries in clear, as the rest
// of an unencrypted store).
func loadJournalKey(dir string, storeKey []byte) (*sealer, error) {
	path := filepath.Join(dir, journalKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && len(storeKey) == 0:
		return nil, nil
	case errors.Is(err, fs.ErrNotExist):
		return createJournalKey(path, storeKey)
	case err != nil:
		return nil, fmt.Errorf("journal key: %w", err)
	case len(storeKey) == 0:
		return nil, fmt.Errorf("journal key %s: the journal is encrypted and no encryption key is given", path)
	}
	dataKey, err := unwrapJournalKey(b, storeKey)
	if err != nil {
		return nil, fmt.Errorf("journal key %s: %w", path, err)
	}
	return newSealer(dataKey)
}

func createJournalKey(path string, storeKey []byte) (*sealer, error) {
	dataKey := make([]byte, 32)
	_, _ = rand.Read(dataKey)
	if err := writeJournalKey(path, dataKey, storeKey); err != nil {
		return nil, err
	}
	return newSealer(dataKey)
}

func wrapJournalKey(dataKey, storeKey []byte) ([]byte, error) {
	s, err := newSealer(storeKey)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	out := append([]byte{journalKeyVersion}, nonce...)
	return s.aead.Seal(out, nonce, dataKey, journalKeyAD), nil
}

func unwrapJournalKey(b, storeKey []byte) ([]byte, error) {
	s, err := newSealer(storeKey)
	if err != nil {
		return nil, err
	}
	n := s.aead.NonceSize()
	if len(b) < 1+n || b[0] != journalKeyVersion {
		return nil, errors.New("unknown journal key format")
	}
	k, err := s.aead.Open(nil, b[1:1+n], b[1+n:], journalKeyAD)
	if err != nil {
		return nil, errors.New("the encryption key is not the key this journal was created with")
	}
	return k, nil
}

// writeJournalKey writes the wrapped key to a temporary file, syncs it and
// renames it over path, so that a crash leaves the old key or the new one.
func writeJournalKey(path string, dataKey, storeKey []byte) error {
	b, err := wrapJournalKey(dataKey, storeKey)
	if err != nil {
		return fmt.Errorf("journal key: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("journal key: %w", err)
	}
	_, werr := f.Write(b)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("journal key %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("journal key: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// rotateJournalKey rewraps the journal key of the store in dir from oldKey
// to newKey; a store without a journal (or without a key) has nothing to do.
func rotateJournalKey(dir string, oldKey, newKey []byte) error {
	path := filepath.Join(journalPath(dir), journalKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("journal key: %w", err)
	}
	if _, err := unwrapJournalKey(b, newKey); err == nil {
		return nil // rotated already, by a rotation that failed after it
	}
	dataKey, err := unwrapJournalKey(b, oldKey)
	if err != nil {
		return fmt.Errorf("journal key %s: %w", path, err)
	}
	return writeJournalKey(path, dataKey, newKey)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
