package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// spoolPayloads are what a destination would have been posted.
var spoolPayloads = []struct {
	name    string
	payload []byte
	secrets []string // must not appear in the spool file
}{
	{"form", []byte("ccustname=J%C3%BCrgen+M%C3%BCller&ccustemail=j%40example.com&cc=4111111111111111&cvv=123" +
		"&password=s3cr%26t%3D%25&ctransreceipt=ABC123&cproditem=ABCD&ctransamount=1999&cverify=0A1B2C3D"),
		[]string{"4111111111111111", "cvv=123", "s3cr%26t", "password", "ctransreceipt"}},
	{"non-ascii", []byte("name=Jürgen Müller – Straße 5&city=Köln&memo=naïve café ✓"), []string{"Jürgen", "Köln", "Stra"}},
	{"crlf and trailing newline", []byte("line1=a\r\nline2=b\r\ncc=5500000000000004\r\n\n"), []string{"5500000000000004", "line1"}},
	{"empty", []byte{}, nil},
	{"one byte", []byte("x"), nil},
	{"lone cr", []byte("\r"), nil},
	{"binary", []byte{0, 1, 2, 0xff, 0xfe, '\n', '\r', 0x1a, 0x80}, nil},
	{"64 KiB", bytes.Repeat([]byte("cc=4111111111111111&cvv=123&x=0123456789abcdef\r\n"), 64<<10/48+1)[:64<<10],
		[]string{"4111111111111111"}},
}

var spoolNameRE = regexp.MustCompile(`^([A-Za-z0-9_][A-Za-z0-9_-]*)-(\d{8}T\d{6}Z)-([A-Za-z0-9_-]+)\.asc$`)

func spoolClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func newTestSpool(t *testing.T, r *Recipient) *Spool {
	t.Helper()
	s, err := NewSpool(filepath.Join(t.TempDir(), "spool", "1001"), r)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkSpoolFile checks what every spool file must be: 0600, armored, in the
// folder, named by the rules, and free of the payload's clear text.
func checkSpoolFile(t *testing.T, s *Spool, path string, payload []byte, secrets []string) []byte {
	t.Helper()
	if filepath.Dir(path) != s.Dir() {
		t.Errorf("%s is not in %s", path, s.Dir())
	}
	if !spoolNameRE.MatchString(filepath.Base(path)) {
		t.Errorf("name %q does not follow <din>-<UTC time>-<id>.asc", filepath.Base(path))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, fi.Mode())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("-----BEGIN PGP MESSAGE-----\n")) ||
		!bytes.HasSuffix(data, []byte("-----END PGP MESSAGE-----\n")) {
		t.Errorf("%s is not an ASCII-armored PGP message:\n%s", path, data)
	}
	for _, sec := range secrets {
		if bytes.Contains(data, []byte(sec)) {
			t.Errorf("%s contains the clear text %q", path, sec)
		}
	}
	if len(payload) >= 8 && bytes.Contains(data, payload[:8]) {
		t.Errorf("%s contains the start of the payload in clear", path)
	}
	return data
}

// Real GnuPG must decrypt every spool file to exactly the payload bytes.
func TestSpoolGPGDecrypts(t *testing.T) {
	fx := gpgFixtures(t)
	gpg := newGPGHome(t)
	now := time.Now()
	for _, key := range []string{"rsa", "classic", "cv25519"} {
		r, err := ParseRecipient(fx.keys[key].pub, now)
		if err != nil {
			t.Fatal(err)
		}
		s := newTestSpool(t, r)
		for i, p := range spoolPayloads {
			t.Run(key+"/"+p.name, func(t *testing.T) {
				id := fmt.Sprintf("01JD%04dXYZ", i)
				path, err := s.Spool("1001", id, p.payload)
				if err != nil {
					t.Fatal(err)
				}
				checkSpoolFile(t, s, path, p.payload, p.secrets)
				if !strings.HasPrefix(filepath.Base(path), "1001-") || !strings.HasSuffix(path, "-"+id+".asc") {
					t.Errorf("name %s should carry din 1001 and id %s", filepath.Base(path), id)
				}
				got, status := gpg.Decrypt(t, path)
				if !bytes.Equal(got, p.payload) {
					t.Fatalf("gpg decrypted %d bytes %q..., want %d bytes %q...",
						len(got), spoolTrunc(got), len(p.payload), spoolTrunc(p.payload))
				}
				// 62 = 'b': binary literal data, with the file name hint.
				if !strings.Contains(status, "[GNUPG:] PLAINTEXT 62 ") || !strings.Contains(status, " 1001-"+id+".txt") {
					t.Errorf("gpg status lacks the binary literal data with name hint:\n%s", status)
				}
				// AES-256 (9) with the modification detection code (mdc method 2).
				if !strings.Contains(status, "[GNUPG:] DECRYPTION_INFO 2 9") ||
					!strings.Contains(status, "[GNUPG:] DECRYPTION_OKAY") || !strings.Contains(status, "[GNUPG:] GOODMDC") {
					t.Errorf("gpg status:\n%s", status)
				}
			})
		}
	}
}

func spoolTrunc(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

// goCryptoDecrypt decrypts an armored message with go-crypto, for key types
// GnuPG 2.2 cannot read.
func goCryptoDecrypt(t *testing.T, priv *openpgp.Entity, data []byte) (*openpgp.MessageDetails, []byte) {
	t.Helper()
	block, err := armor.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	md, err := openpgp.ReadMessage(block.Body, openpgp.EntityList{priv}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(md.UnverifiedBody)
	if err != nil {
		t.Fatal(err)
	}
	return md, got
}

func TestSpoolGoCryptoKeys(t *testing.T) {
	for _, kt := range goCryptoKeyTypes {
		t.Run(kt.name, func(t *testing.T) {
			priv, pub := goCryptoKey(t, kt.cfg)
			r, err := ParseRecipient(pub, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			s := newTestSpool(t, r)
			for i, p := range spoolPayloads {
				path, err := s.Spool("2001", fmt.Sprint("id", i), p.payload)
				if err != nil {
					t.Fatal(err)
				}
				data := checkSpoolFile(t, s, path, p.payload, p.secrets)
				md, got := goCryptoDecrypt(t, priv, data)
				if !bytes.Equal(got, p.payload) {
					t.Errorf("%s: decrypted %q, want %q", p.name, spoolTrunc(got), spoolTrunc(p.payload))
				}
				if md.LiteralData.Format != 'b' || md.LiteralData.FileName != fmt.Sprintf("2001-id%d.txt", i) {
					t.Errorf("%s: literal data format %q name %q", p.name, md.LiteralData.Format, md.LiteralData.FileName)
				}
			}
		})
	}
}

func TestSpoolNeverOverwrites(t *testing.T) {
	_, pub := goCryptoKey(t, goCryptoKeyTypes[0].cfg)
	r, err := ParseRecipient(pub, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestSpool(t, r)
	at := time.Now().Add(time.Hour).In(time.FixedZone("CET", 3600)) // the name is in UTC whatever the zone
	s.now = spoolClock(at)
	first, err := s.Spool("1001", "abc", []byte("cc=4111111111111111"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "1001-" + at.UTC().Format("20060102T150405Z") + "-abc.asc"; filepath.Base(first) != want {
		t.Errorf("name %s, want %s", filepath.Base(first), want)
	}
	before, _ := os.ReadFile(first)
	path, err := s.Spool("1001", "abc", []byte("cc=5500000000000004"))
	if !errors.Is(err, ErrSpoolExists) || path != "" {
		t.Fatalf("second spool with the same name: %q, %v; want ErrSpoolExists", path, err)
	}
	if !strings.Contains(err.Error(), first) {
		t.Errorf("error %q should name the file", err)
	}
	after, _ := os.ReadFile(first)
	if !bytes.Equal(before, after) {
		t.Error("the first spool file was changed")
	}
	assertSpoolHolds(t, s.Dir(), filepath.Base(first))

	// The same bytes again (an idempotent retry) are accepted.
	again, err := s.commit(filepath.Base(first), before)
	if err != nil || again != first {
		t.Fatalf("commit of identical content: %q, %v", again, err)
	}
	assertSpoolHolds(t, s.Dir(), filepath.Base(first))
}

// assertSpoolHolds checks the folder holds exactly names: no temp files left.
func assertSpoolHolds(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, "\n") != strings.Join(names, "\n") {
		t.Errorf("folder holds %q, want %q", got, names)
	}
}

func TestSpoolNamesCannotEscape(t *testing.T) {
	_, pub := goCryptoKey(t, goCryptoKeyTypes[0].cfg)
	r, err := ParseRecipient(pub, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestSpool(t, r)
	cases := []struct{ din, id string }{
		{"../../etc", "passwd"},
		{"1001", "../../../tmp/x"},
		{"/abs", `a\b\..\c`},
		{"..", ".."},
		{"", ""},
		{"-rf", "-x"},
		{"10\x0001", "id\nwith\nnewlines"},
		{"dïn–1", "ünïcode"},
		{".hidden", ".id"},
		{strings.Repeat("9", 500), strings.Repeat("z/", 500)},
	}
	for _, c := range cases {
		path, err := s.Spool(c.din, c.id, []byte("a=b"))
		if err != nil {
			t.Fatalf("Spool(%q, %q): %v", c.din, c.id, err)
		}
		base := filepath.Base(path)
		if filepath.Dir(path) != s.Dir() || !spoolNameRE.MatchString(base) || len(base) > 255-32 {
			t.Errorf("Spool(%q, %q) wrote %s", c.din, c.id, path)
		}
	}
	for in, want := range map[string]string{
		"1001": "1001", "": "_", "a/b": "a_b", "../x": "___x", "-a-b": "_a-b", "ä": "__", "A_z-9": "A_z-9",
	} {
		if got := sanitizeSpoolName(in, 64); got != want {
			t.Errorf("sanitizeSpoolName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := sanitizeSpoolName(strings.Repeat("x", 100), 64); len(got) != 64 {
		t.Errorf("sanitizeSpoolName does not cap the length: %d", len(got))
	}
}

func TestSpoolKeyExpiredSinceLoad(t *testing.T) {
	fx := gpgFixtures(t)
	now := time.Now()
	for _, key := range []string{"expiring", "subexpiring"} {
		r, err := ParseRecipient(fx.keys[key].pub, now)
		if err != nil {
			t.Fatal(err)
		}
		s := newTestSpool(t, r)
		s.now = spoolClock(now.Add(48 * time.Hour))
		path, err := s.Spool("1001", "late", []byte("cc=4111111111111111"))
		if !errors.Is(err, ErrPGPKeyExpired) || path != "" {
			t.Fatalf("%s: spool after expiry: %q, %v; want ErrPGPKeyExpired", key, path, err)
		}
		if !strings.Contains(err.Error(), "expired on") || strings.Contains(err.Error(), "4111111111111111") { // not "4111": a temp dir name may hold it
			t.Errorf("error %q", err)
		}
		assertSpoolHolds(t, s.Dir())
	}
}

func TestNewSpool(t *testing.T) {
	_, pub := goCryptoKey(t, goCryptoKeyTypes[0].cfg)
	r, err := ParseRecipient(pub, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("creates the folder 0700", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b", "1001")
		s, err := NewSpool(dir, r)
		if err != nil {
			t.Fatal(err)
		}
		if s.Dir() != dir {
			t.Errorf("Dir() = %s, want %s", s.Dir(), dir)
		}
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode() != fs.ModeDir|0o700 {
			t.Fatalf("folder mode %v, %v; want drwx------", fi.Mode(), err)
		}
		assertSpoolHolds(t, dir) // the probe file is gone
	})
	t.Run("keeps the mode of an existing folder", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o750); err != nil {
			t.Fatal(err)
		}
		if _, err := NewSpool(dir, r); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o750 {
			t.Errorf("mode changed to %v", fi.Mode())
		}
	})
	t.Run("relative path becomes absolute", func(t *testing.T) {
		t.Chdir(t.TempDir())
		s, err := NewSpool("spool", r)
		if err != nil {
			t.Fatal(err)
		}
		if !filepath.IsAbs(s.Dir()) {
			t.Errorf("Dir() = %s", s.Dir())
		}
	})
	t.Run("not a directory", func(t *testing.T) {
		f := writeTestKeyFile(t, "file", []byte("x"))
		if _, err := NewSpool(f, r); err == nil || !strings.Contains(err.Error(), "not a directory") || !strings.Contains(err.Error(), f) {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("not writable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root writes anywhere")
		}
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(dir, 0o700)
		if _, err := NewSpool(dir, r); err == nil || !strings.Contains(err.Error(), "not writable") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("no key or folder", func(t *testing.T) {
		if _, err := NewSpool("", r); err == nil {
			t.Error("empty folder accepted")
		}
		if _, err := NewSpool(t.TempDir(), nil); err == nil {
			t.Error("nil recipient accepted")
		}
	})
	t.Run("sweeps stale temp files only", func(t *testing.T) {
		dir := t.TempDir()
		old := filepath.Join(dir, ".1001-20261122T054012Z-a.asc.123.tmp")
		fresh := filepath.Join(dir, ".1001-20261122T054013Z-b.asc.456.tmp")
		other := filepath.Join(dir, ".keepme.tmp")
		for _, p := range []string{old, fresh, other} {
			if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		past := time.Now().Add(-2 * time.Hour)
		os.Chtimes(old, past, past)
		os.Chtimes(other, past, past)
		if _, err := NewSpool(dir, r); err != nil {
			t.Fatal(err)
		}
		assertSpoolHolds(t, dir, filepath.Base(fresh), filepath.Base(other))
	})
}

// Without hard links (FAT, some SMB mounts) the spool falls back to a
// checked rename and still never overwrites.
func TestSpoolLinkFallback(t *testing.T) {
	_, pub := goCryptoKey(t, goCryptoKeyTypes[0].cfg)
	r, err := ParseRecipient(pub, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestSpool(t, r)
	s.now = spoolClock(time.Now())
	s.link = func(o, n string) error { return &os.LinkError{Op: "link", Old: o, New: n, Err: errors.ErrUnsupported} }
	first, err := s.Spool("1001", "x", []byte("a=1"))
	if err != nil {
		t.Fatal(err)
	}
	checkSpoolFile(t, s, first, []byte("a=1"), nil)
	before, _ := os.ReadFile(first)
	if _, err := s.Spool("1001", "x", []byte("a=2")); !errors.Is(err, ErrSpoolExists) {
		t.Fatalf("error %v, want ErrSpoolExists", err)
	}
	after, _ := os.ReadFile(first)
	if !bytes.Equal(before, after) {
		t.Error("the first spool file was changed")
	}
	assertSpoolHolds(t, s.Dir(), filepath.Base(first))
}

// A failure after the temp file was written leaves nothing behind.
func TestSpoolFailureRemovesTemp(t *testing.T) {
	_, pub := goCryptoKey(t, goCryptoKeyTypes[0].cfg)
	r, err := ParseRecipient(pub, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestSpool(t, r)
	s.link = func(o, n string) error {
		return &os.LinkError{Op: "link", Old: o, New: n, Err: errors.New("input/output error")}
	}
	path, err := s.Spool("1001", "x", []byte("a=1"))
	if err == nil || path != "" || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("Spool = %q, %v; want the link error", path, err)
	}
	assertSpoolHolds(t, s.Dir())
}

// Delivery workers spool concurrently, possibly through one Recipient.
func TestSpoolConcurrent(t *testing.T) {
	priv, pub := goCryptoKey(t, goCryptoKeyTypes[1].cfg)
	r, err := ParseRecipient(pub, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	s1, s2 := newTestSpool(t, r), newTestSpool(t, r)
	var wg sync.WaitGroup
	paths := make([]string, 32)
	errs := make([]error, 32)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := s1
			if i%2 == 1 {
				s = s2
			}
			paths[i], errs[i] = s.Spool("1001", fmt.Sprint("id", i), []byte(fmt.Sprint("n=", i)))
		}()
	}
	wg.Wait()
	for i, p := range paths {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, got := goCryptoDecrypt(t, priv, data); string(got) != fmt.Sprint("n=", i) {
			t.Errorf("%s decrypts to %q", p, got)
		}
	}
}
