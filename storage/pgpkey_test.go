package storage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// GnuPG fixtures: keys are made once per test binary by real gpg in a
// throw-away home, exported, and the home is removed again. Tests that
// decrypt import the secret keys into their own home (newGPGHome).

type gpgKey struct {
	fpr    string
	pub    []byte // armored public key
	pubBin []byte // binary public key
}

type gpgFixtureSet struct {
	created time.Time
	keys    map[string]*gpgKey
	secrets []byte            // armored secret keys of all fixtures
	extra   map[string][]byte // other files: several keys, secret keys, a message
}

var (
	gpgOnce sync.Once
	gpgErr  error
	gpgFix  gpgFixtureSet
)

func gpgFixtures(t testing.TB) *gpgFixtureSet {
	t.Helper()
	testutil.FindGPG(t)
	gpgOnce.Do(func() {
		gpgErr = errors.New("the test that began making them stopped half-way")
		gpgErr = makeGPGFixtures(t)
	})
	if gpgErr != nil {
		t.Fatalf("making gpg fixtures: %v", gpgErr)
	}
	return &gpgFix
}

func makeGPGFixtures(t testing.TB) error {
	g := testutil.NewGPG(t)
	defer g.Close()
	run := func(args ...string) ([]byte, error) {
		out, _, err := g.Run(nil, args...)
		return out, err
	}
	gpgFix.created = time.Now()
	gpgFix.keys = map[string]*gpgKey{}
	gpgFix.extra = map[string][]byte{}
	// name → uid, primary algo, usage, expiry, then subkey (algo, usage, expiry) triples
	specs := []struct {
		name, uid string
		primary   []string
		subs      [][]string
	}{
		{"rsa", "Partner 1001 <saft@partner.example>", []string{"rsa3072", "encrypt,sign", "never"}, nil},
		{"classic", "Partner 1003 <saft@classic.example>", []string{"rsa2048", "sign", "never"}, [][]string{{"rsa2048", "encr", "never"}}},
		{"cv25519", "Partner 1002 <saft@curve.example>", []string{"ed25519", "sign", "never"}, [][]string{{"cv25519", "encr", "never"}}},
		{"signonly", "Signer <sign@only.example>", []string{"ed25519", "sign", "never"}, nil},
		{"expiring", "Expiring <exp@partner.example>", []string{"ed25519", "sign", "1d"}, [][]string{{"cv25519", "encr", "never"}}},
		{"subexpiring", "Subexpiring <subexp@partner.example>", []string{"ed25519", "sign", "never"}, [][]string{{"cv25519", "encr", "1d"}}},
		{"revoked", "Revoked <rev@partner.example>", []string{"ed25519", "sign", "never"}, [][]string{{"cv25519", "encr", "never"}}},
		{"revokedsub", "Revokedsub <revsub@partner.example>", []string{"ed25519", "sign", "never"}, [][]string{{"cv25519", "encr", "never"}}},
		{"weak", "Weak <weak@partner.example>", []string{"rsa1024", "encrypt,sign", "never"}, nil},
	}
	for _, s := range specs {
		if _, err := run(append([]string{"--quick-gen-key", s.uid}, s.primary...)...); err != nil {
			return err
		}
		fpr, err := g.Fingerprint(s.uid)
		if err != nil {
			return err
		}
		for _, sub := range s.subs {
			if _, err := run(append([]string{"--quick-add-key", fpr}, sub...)...); err != nil {
				return err
			}
		}
		gpgFix.keys[s.name] = &gpgKey{fpr: fpr}
	}
	// Revoke a whole key with the certificate gpg stored at generation
	// (its BEGIN line is defused with a leading colon)...
	rev, err := os.ReadFile(filepath.Join(g.Home, "openpgp-revocs.d", gpgFix.keys["revoked"].fpr+".rev"))
	if err != nil {
		return err
	}
	rev = bytes.Replace(rev, []byte(":-----BEGIN"), []byte("-----BEGIN"), 1)
	if _, _, err := g.Run(rev, "--import"); err != nil {
		return err
	}
	// ...and only the encryption subkey of another.
	if _, _, err := g.Run([]byte("key 1\nrevkey\ny\n0\n\ny\nsave\n"),
		"--yes", "--command-fd", "0", "--edit-key", gpgFix.keys["revokedsub"].fpr); err != nil {
		return err
	}
	for _, k := range gpgFix.keys {
		if k.pub, err = run("--armor", "--export", k.fpr); err != nil {
			return err
		}
		if k.pubBin, err = run("--export", k.fpr); err != nil {
			return err
		}
	}
	if gpgFix.secrets, err = run("--armor", "--export-secret-keys"); err != nil {
		return err
	}
	if gpgFix.extra["two-in-one-block"], err = run("--armor", "--export",
		gpgFix.keys["rsa"].fpr, gpgFix.keys["cv25519"].fpr); err != nil {
		return err
	}
	if gpgFix.extra["secret"], err = run("--armor", "--export-secret-keys", gpgFix.keys["cv25519"].fpr); err != nil {
		return err
	}
	if gpgFix.extra["secret-bin"], err = run("--export-secret-keys", gpgFix.keys["cv25519"].fpr); err != nil {
		return err
	}
	if gpgFix.extra["message"], err = run("--armor", "--trust-model", "always", "--encrypt",
		"--recipient", gpgFix.keys["cv25519"].fpr); err != nil {
		return err
	}
	return nil
}

// newGPGHome is a home holding all fixture secret keys, for decryption.
func newGPGHome(t *testing.T) *testutil.GPG {
	t.Helper()
	fx := gpgFixtures(t)
	g := testutil.NewGPG(t)
	g.MustRun(t, fx.secrets, "--import")
	return g
}

func writeTestKeyFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadRecipientGPGKeys(t *testing.T) {
	fx := gpgFixtures(t)
	now := time.Now()
	cases := []struct {
		key, uid, algo string
		binary         bool
	}{
		{"rsa", "Partner 1001 <saft@partner.example>", "RSA 3072", false},
		{"classic", "Partner 1003 <saft@classic.example>", "RSA 2048", false},
		{"cv25519", "Partner 1002 <saft@curve.example>", "ECDH Curve25519", false},
		{"cv25519", "Partner 1002 <saft@curve.example>", "ECDH Curve25519", true},
		{"subexpiring", "Subexpiring <subexp@partner.example>", "ECDH Curve25519", false},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/binary=%v", c.key, c.binary), func(t *testing.T) {
			k := fx.keys[c.key]
			data := k.pub
			if c.binary {
				data = k.pubBin
			}
			r, err := LoadRecipient(writeTestKeyFile(t, "partner.asc", data), now)
			if err != nil {
				t.Fatal(err)
			}
			if r.Fingerprint != k.fpr {
				t.Errorf("Fingerprint = %s, gpg says %s", r.Fingerprint, k.fpr)
			}
			if r.UserID != c.uid {
				t.Errorf("UserID = %q, want %q", r.UserID, c.uid)
			}
			if r.Algorithm != c.algo {
				t.Errorf("Algorithm = %q, want %q", r.Algorithm, c.algo)
			}
			if len(r.EncryptionKeyID) != 16 {
				t.Errorf("EncryptionKeyID = %q", r.EncryptionKeyID)
			}
			if c.key == "rsa" && !strings.HasSuffix(k.fpr, r.EncryptionKeyID) {
				t.Errorf("rsa key encrypts with its primary key, got key ID %s for %s", r.EncryptionKeyID, k.fpr)
			}
			if c.key == "subexpiring" {
				want := fx.created.Add(24 * time.Hour)
				if d := r.Expires.Sub(want); d < -time.Minute || d > time.Minute {
					t.Errorf("Expires = %v, want about %v", r.Expires, want)
				}
			} else if !r.Expires.IsZero() {
				t.Errorf("Expires = %v, want zero (never)", r.Expires)
			}
			if err := r.Check(now); err != nil {
				t.Errorf("Check: %v", err)
			}
		})
	}
}

func TestLoadRecipientRefusesGPGKeys(t *testing.T) {
	fx := gpgFixtures(t)
	now := time.Now()
	later := now.Add(48 * time.Hour)
	both := append(append([]byte{}, fx.keys["rsa"].pub...), fx.keys["cv25519"].pub...)
	half := fx.keys["cv25519"].pub[:len(fx.keys["cv25519"].pub)/2]
	cases := []struct {
		name string
		data []byte
		now  time.Time
		kind error
		says string
	}{
		{"signing key only", fx.keys["signonly"].pub, now, ErrPGPNoEncryptionKey, "has no encryption key"},
		{"primary expired", fx.keys["expiring"].pub, later, ErrPGPKeyExpired, "expired on"},
		{"encryption subkey expired", fx.keys["subexpiring"].pub, later, ErrPGPKeyExpired, "encryption subkey"},
		{"revoked", fx.keys["revoked"].pub, now, ErrPGPKeyRevoked, "is revoked"},
		{"encryption subkey revoked", fx.keys["revokedsub"].pub, now, ErrPGPKeyRevoked, "encryption subkey"},
		{"rsa 1024", fx.keys["weak"].pub, now, ErrPGPNoEncryptionKey, "too weak"},
		{"not yet valid", fx.keys["cv25519"].pub, now.Add(-48 * time.Hour), ErrPGPNoEncryptionKey, "check the clock"},
		{"two keys in one block", fx.extra["two-in-one-block"], now, ErrPGPAmbiguousKey, "holds 2 keys"},
		{"two keys in one binary file", append(append([]byte{}, fx.keys["rsa"].pubBin...), fx.keys["cv25519"].pubBin...), now, ErrPGPAmbiguousKey, "holds 2 keys"},
		{"two armored blocks", both, now, ErrPGPAmbiguousKey, "2 armored blocks"},
		{"private key", fx.extra["secret"], now, ErrPGPNotPublicKey, "private"},
		{"private key binary", fx.extra["secret-bin"], now, ErrPGPNotPublicKey, "private"},
		{"encrypted message", fx.extra["message"], now, ErrPGPNotPublicKey, `"PGP MESSAGE"`},
		{"truncated armor", half, now, ErrPGPNotPublicKey, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeTestKeyFile(t, "partner.asc", c.data)
			r, err := LoadRecipient(path, c.now)
			if err == nil {
				t.Fatalf("loaded %s (%s); want an error", r, r.Algorithm)
			}
			if !errors.Is(err, c.kind) {
				t.Errorf("error %q is not %v", err, c.kind)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(c.says)) {
				t.Errorf("error %q should name the file and say %q", err, c.says)
			}
		})
	}
}

// A key that is fine at load but expires later is refused at that later time.
func TestRecipientCheckLater(t *testing.T) {
	fx := gpgFixtures(t)
	now := time.Now()
	r, err := ParseRecipient(fx.keys["expiring"].pub, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check(now.Add(48 * time.Hour)); !errors.Is(err, ErrPGPKeyExpired) {
		t.Fatalf("Check two days later: %v, want ErrPGPKeyExpired", err)
	}
}

func TestLoadRecipientRefusesNonKeys(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		data []byte
		says string
	}{
		{"empty", nil, "empty"},
		{"blank", []byte("  \n\n"), "empty"},
		{"text", []byte("this is not a key\n"), "neither"},
		{"binary garbage", bytes.Repeat([]byte{0xff, 0x13, 0x00}, 50), "not an OpenPGP key"},
		{"armor of garbage", []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot base64 at all !!\n-----END PGP PUBLIC KEY BLOCK-----\n"), ""},
		{"pem certificate", []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), "neither"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".asc")
			if err := os.WriteFile(path, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadRecipient(path, time.Time{})
			if !errors.Is(err, ErrPGPNotPublicKey) {
				t.Fatalf("error %v, want ErrPGPNotPublicKey", err)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.says) {
				t.Errorf("error %q should name the file and say %q", err, c.says)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(dir, "nope.asc")
		_, err := LoadRecipient(path, time.Time{})
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "cannot read") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		_, err := LoadRecipient(dir, time.Time{})
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("error %v", err)
		}
	})
}

// goCryptoKey makes a key with go-crypto and returns the private entity and
// the armored public key: for key types GnuPG 2.2 cannot make.
func goCryptoKey(t testing.TB, cfg *packet.Config) (*openpgp.Entity, []byte) {
	t.Helper()
	e, err := openpgp.NewEntity("Partner 2001", "", "saft@gocrypto.example", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return e, buf.Bytes()
}

var goCryptoKeyTypes = []struct {
	name, algo string
	cfg        *packet.Config
}{
	{"legacy-curve25519-v4", "ECDH Curve25519", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Curve: packet.Curve25519}},
	{"x25519-v4", "X25519", &packet.Config{Algorithm: packet.PubKeyAlgoEd25519}},
	{"x25519-v6", "X25519", &packet.Config{Algorithm: packet.PubKeyAlgoEd25519, V6Keys: true}},
	{"rsa2048-v4", "RSA 2048", &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: 2048}},
}

func TestParseRecipientGoCryptoKeys(t *testing.T) {
	for _, kt := range goCryptoKeyTypes {
		t.Run(kt.name, func(t *testing.T) {
			priv, pub := goCryptoKey(t, kt.cfg)
			r, err := ParseRecipient(pub, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if r.Algorithm != kt.algo {
				t.Errorf("Algorithm = %q, want %q", r.Algorithm, kt.algo)
			}
			if want := fmt.Sprintf("%X", priv.PrimaryKey.Fingerprint); r.Fingerprint != want {
				t.Errorf("Fingerprint = %s, want %s", r.Fingerprint, want)
			}
			if !strings.Contains(r.String(), r.Fingerprint) {
				t.Errorf("String() = %q", r.String())
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		_, pub := goCryptoKey(t, &packet.Config{Algorithm: packet.PubKeyAlgoEd25519, KeyLifetimeSecs: 3600})
		if _, err := ParseRecipient(pub, time.Now().Add(2*time.Hour)); !errors.Is(err, ErrPGPKeyExpired) {
			t.Fatalf("error %v, want ErrPGPKeyExpired", err)
		}
	})
}

func TestCountKeys(t *testing.T) {
	// Old-format and new-format headers, and a secret key tag.
	cases := []struct {
		in               []byte
		publics, secrets int
		bad              bool
	}{
		{[]byte{0x99, 0x00, 0x01, 0x04}, 1, 0, false},       // old format tag 6, 2-byte length
		{[]byte{0xc6, 0x01, 0x04, 0xc6, 0x00}, 2, 0, false}, // new format tag 6 twice
		{[]byte{0xc5, 0x01, 0x04}, 0, 1, false},             // new format tag 5
		{[]byte{0xc6, 0xff, 0, 0, 0, 1, 4}, 1, 0, false},    // 4-byte length
		{[]byte{0xc6, 0x05, 0x04}, 0, 0, true},              // truncated
		{[]byte{0xc6, 0xe1, 0x04}, 0, 0, true},              // partial length
		{[]byte{0x42}, 0, 0, true},                          // not a header
	}
	for i, c := range cases {
		p, s, err := countKeys(c.in)
		if (err != nil) != c.bad || p != c.publics || s != c.secrets {
			t.Errorf("case %d: countKeys = %d, %d, %v", i, p, s, err)
		}
	}
}
