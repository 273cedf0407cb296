package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// ErrSpoolExists: a spool file of that name already exists with other
// content; it is never overwritten.
var ErrSpoolExists = errors.New("spool file already exists")

const (
	spoolTimeFormat = "20060102T150405Z"
	spoolTmpSuffix  = ".tmp"
	// Temp files older than this found by NewSpool are leftovers of a crash.
	// The age guard keeps us off files a still-running old config writes
	// during a reload.
	staleTempAge = time.Hour
	maxDINLen    = 64
	maxIDLen     = 128
)

// Spool writes encrypted files for one destination folder.
type Spool struct {
	dir  string
	r    *Recipient
	mode fs.FileMode                         // of new files: DefaultSpoolMode or SpoolModeGroupRead
	now  func() time.Time                    // injectable for tests
	link func(oldname, newname string) error // os.Link; injectable for tests
}

// NewSpool prepares dir (created with mode 0700 when missing) and checks that
// it is a writable directory.
func NewSpool(dir string, r *Recipient) (*Spool, error) {
	if dir == "" {
		return nil, errors.New("spool: no folder given")
	}
	if r == nil || r.entity == nil {
		return nil, fmt.Errorf("spool %s: no recipient key", dir)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	dir = abs
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("spool %s: create folder: %w", dir, err)
		}
		// MkdirAll is subject to the umask; make the new folder exactly 0700.
		// An existing folder keeps its mode: the pickup account may need group access.
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("spool %s: %w", dir, err)
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("spool %s: not a directory", dir)
	}
	probe, err := os.CreateTemp(dir, ".probe-*"+spoolTmpSuffix)
	if err != nil {
		return nil, fmt.Errorf("spool %s: folder is not writable: %w", dir, err)
	}
	probe.Close()
	if err := os.Remove(probe.Name()); err != nil {
		return nil, fmt.Errorf("spool %s: folder does not allow removing files: %w", dir, err)
	}
	sweepTemps(dir, time.Now().Add(-staleTempAge))
	return &Spool{dir: dir, r: r, mode: DefaultSpoolMode, now: time.Now, link: os.Link}, nil
}

// The modes a spool file may have: the owner's alone, or readable by the
// folder's group too, for a pickup account in that group (the folder's
// setgid bit gives new files its group; README, "Pickup over SFTP").
const (
	DefaultSpoolMode   fs.FileMode = 0o600
	SpoolModeGroupRead fs.FileMode = 0o640
)

// ParseSpoolMode reads a spool file mode in octal: 0600 or 0640, nothing
// wider, since the files are for one partner's pickup account.
func ParseSpoolMode(s string) (fs.FileMode, error) {
	switch s {
	case "0600", "600":
		return DefaultSpoolMode, nil
	case "0640", "640":
		return SpoolModeGroupRead, nil
	}
	return 0, fmt.Errorf("spool_mode %q: want 0600 (the default) or 0640 (readable by the spool folder's group)", s)
}

// SetMode sets the mode of the files written from now on (see
// ParseSpoolMode); call it before the spool is in use.
func (s *Spool) SetMode(m fs.FileMode) error {
	if m != DefaultSpoolMode && m != SpoolModeGroupRead {
		return fmt.Errorf("spool %s: mode %#o: want %#o or %#o", s.dir, m, DefaultSpoolMode, SpoolModeGroupRead)
	}
	s.mode = m
	return nil
}

// Dir is the spool folder, absolute.
func (s *Spool) Dir() string { return s.dir }

// Recipient is the key files are encrypted to.
func (s *Spool) Recipient() *Recipient { return s.r }

// Spool encrypts payload (exactly the string that would have been posted) to
// the recipient, ASCII-armored, and writes it as
// <din>-<UTC time>-<id>.asc in the folder. The file is complete and synced
// when Spool returns without error; it is never overwritten (ErrSpoolExists).
// If the file was linked in place but the folder could not be synced, both
// the path and an error are returned.
func (s *Spool) Spool(din, id string, payload []byte) (path string, err error) {
	now := s.now().UTC()
	d, i := sanitizeSpoolName(din, maxDINLen), sanitizeSpoolName(id, maxIDLen)
	name := d + "-" + now.Format(spoolTimeFormat) + "-" + i + ".asc"

	// Encrypt in memory first: a key problem then never touches the disk,
	// and postback payloads are small.
	var buf bytes.Buffer
	buf.Grow(len(payload)*4/3 + 2048)
	if err := s.r.encrypt(&buf, payload, d+"-"+i+".txt", now); err != nil {
		return "", fmt.Errorf("spool %s: encrypt: %w", filepath.Join(s.dir, name), err)
	}
	path, err = s.commit(name, buf.Bytes())
	if err != nil {
		return path, fmt.Errorf("spool %s: %w", filepath.Join(s.dir, name), err)
	}
	return path, nil
}

// encrypt writes payload as an ASCII-armored OpenPGP message to w.
func (r *Recipient) encrypt(w io.Writer, payload []byte, fileName string, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Re-check at spool time: the key may have expired since load. This
	// gives the same readable error LoadRecipient would.
	if _, err := r.encryptionKey(now); err != nil {
		return err
	}
	aw, err := armor.Encode(w, "PGP MESSAGE", nil)
	if err != nil {
		return err
	}
	// Literal data in binary mode (v2's default, IsUTF8 unset): the plaintext
	// is the payload bytes as they are, with no line-ending conversion. No compression (go-crypto's default):
	// payloads are small and compressing secrets next to attacker-chosen
	// fields leaks through the length.
	pw, err := openpgp.Encrypt(aw, []*openpgp.Entity{r.entity}, nil, nil,
		&openpgp.FileHints{FileName: fileName, ModTime: now}, pgpConfig(now))
	if err != nil {
		return err
	}
	if _, err := pw.Write(payload); err != nil {
		return err
	}
	if err := pw.Close(); err != nil {
		return err
	}
	if err := aw.Close(); err != nil {
		return err
	}
	_, err = io.WriteString(w, "\n") // the armor ends without a newline
	return err
}

// commit writes data to a temporary dot-file (pickup tools skip those),
// syncs it, and links it to name without ever replacing an existing file.
func (s *Spool) commit(name string, data []byte) (string, error) {
	final := filepath.Join(s.dir, name)
	f, err := os.CreateTemp(s.dir, "."+name+".*"+spoolTmpSuffix) // O_EXCL, 0600
	if err != nil {
		return "", fmt.Errorf("create temporary file: %w", err)
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// CreateTemp's 0600 is subject to the umask; make it exact.
	if err := f.Chmod(s.mode); err != nil {
		return "", fmt.Errorf("chmod temporary file: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return "", fmt.Errorf("write temporary file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("sync temporary file: %w", err)
	}
	if err := f.Close(); err != nil { // the deferred second Close is harmless
		return "", fmt.Errorf("close temporary file: %w", err)
	}
	done = true
	err = s.linkNoReplace(tmp, final)
	if errors.Is(err, fs.ErrExist) {
		if same, _ := spoolSameContent(final, data); same {
			err = nil // the same bytes are already there: an idempotent retry
		} else {
			err = fmt.Errorf("%w; not overwriting it", ErrSpoolExists)
		}
	}
	// After a link both names share one inode; dropping the temp name leaves
	// the final file. A failure here only leaves a dot-file that NewSpool
	// sweeps later, so it is not worth failing a written spool for.
	os.Remove(tmp)
	if err != nil {
		return "", err
	}
	if err := syncSpoolDir(s.dir); err != nil {
		return final, fmt.Errorf("file written, but syncing the folder failed: %w", err)
	}
	return final, nil
}

// spoolRenameMu makes the check-then-rename fallback atomic within this process.
var spoolRenameMu sync.Mutex

// linkNoReplace makes oldname also appear as newname, failing with
// fs.ErrExist if newname exists. A hard link does that atomically; on
// filesystems without hard links (FAT, some SMB mounts) it falls back to
// checking and renaming, which another process could race.
func (s *Spool) linkNoReplace(oldname, newname string) error {
	err := s.link(oldname, newname)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return err
	}
	if !errors.Is(err, errors.ErrUnsupported) && !errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("link to final name: %w", err)
	}
	spoolRenameMu.Lock()
	defer spoolRenameMu.Unlock()
	if _, serr := os.Lstat(newname); serr == nil {
		return fs.ErrExist
	} else if !errors.Is(serr, fs.ErrNotExist) {
		return fmt.Errorf("check final name: %w", serr)
	}
	if rerr := os.Rename(oldname, newname); rerr != nil {
		return fmt.Errorf("link to final name: %v; rename fallback: %w", err, rerr)
	}
	return nil
}

func spoolSameContent(path string, data []byte) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	got, err := io.ReadAll(io.LimitReader(f, int64(len(data))+1))
	if err != nil {
		return false, err
	}
	return bytes.Equal(got, data), nil
}

// syncSpoolDir makes the new directory entry durable.
func syncSpoolDir(dir string) error {
	if runtime.GOOS == "windows" { // directories cannot be opened for sync there
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// sweepTemps removes our temporary files last modified before cutoff. Best
// effort: a leftover only holds ciphertext or nothing.
func sweepTemps(dir string, cutoff time.Time) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(n, ".") || !strings.HasSuffix(n, spoolTmpSuffix) ||
			!(strings.Contains(n, ".asc.") || strings.HasPrefix(n, ".probe-")) {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.ModTime().Before(cutoff) {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

// sanitizeSpoolName keeps [A-Za-z0-9_-] and replaces anything else, so a spool
// name can never leave the folder or hide as a dot-file. It never starts with
// '-', which shell tools would take for an option.
func sanitizeSpoolName(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_':
		case c == '-' && i > 0:
		default:
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}
