package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// We use go-crypto's v2 API: unlike v1 it skips unsupported subkeys instead of
// dropping the whole key, picks the latest *valid* binding signature, tells
// expired from revoked, and refuses weak keys (RSA < 2047 bits, DSA, ElGamal).
// Both handle RSA and Curve25519 (legacy EdDSA/ECDH as made by GnuPG 2.2, and
// the RFC 9580 Ed25519/X25519 algorithms).

// Errors a recipient key can be refused with; test with errors.Is.
var (
	ErrPGPNotPublicKey    = errors.New("not an OpenPGP public key")
	ErrPGPAmbiguousKey    = errors.New("more than one OpenPGP key")
	ErrPGPNoEncryptionKey = errors.New("no OpenPGP key usable for encryption")
	ErrPGPKeyExpired      = errors.New("OpenPGP key expired")
	ErrPGPKeyRevoked      = errors.New("OpenPGP key revoked")
)

// maxKeyFileSize bounds what LoadRecipient reads: real keys are a few KiB,
// keys with many third-party signatures a few MiB.
const maxKeyFileSize = 16 << 20

// Recipient is a partner's public key, checked at config load.
type Recipient struct {
	Fingerprint     string    // primary key, uppercase hex as gpg prints it
	UserID          string    // primary user ID, e.g. "Partner 1001 <saft@partner.example>"
	Expires         time.Time // when the encryption key chosen at load stops being valid; zero = never
	EncryptionKeyID string    // key ID (16 hex digits) of that encryption key (sub)key
	Algorithm       string    // of that key, e.g. "RSA 3072", "ECDH Curve25519"

	// mu serialises use of entity: go-crypto caches signature verification
	// results inside it, so concurrent spools would race.
	mu     sync.Mutex
	entity *openpgp.Entity
}

// pgpKeyError gives a readable message while errors.Is still finds its kind.
type pgpKeyError struct {
	kind error
	msg  string
}

func (e *pgpKeyError) Error() string { return e.msg }
func (e *pgpKeyError) Unwrap() error { return e.kind }

func pgpKeyErr(kind error, format string, args ...any) error {
	return &pgpKeyError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// LoadRecipient reads a partner's public key from an ASCII-armored file (as
// made by `gpg --armor --export`) or a binary one (`gpg --export`) and checks
// that it can encrypt at time now (zero means time.Now()).
func LoadRecipient(path string, now time.Time) (*Recipient, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("pgp key %s: %w", path, err)
	}
	r, err := parseRecipient(data, now)
	if err != nil {
		return nil, fmt.Errorf("pgp key %s: %w", path, err)
	}
	return r, nil
}

// ParseRecipient is LoadRecipient for key data already in memory.
func ParseRecipient(armored []byte, now time.Time) (*Recipient, error) {
	r, err := parseRecipient(armored, now)
	if err != nil {
		return nil, fmt.Errorf("pgp key: %w", err)
	}
	return r, nil
}

func readKeyFile(path string) ([]byte, error) {
	// Stat first: opening a FIFO or device by mistake would block or never end.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("cannot read: not a regular file")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	if len(data) > maxKeyFileSize {
		return nil, pgpKeyErr(ErrPGPNotPublicKey, "file is larger than %d MiB; not a public key", maxKeyFileSize>>20)
	}
	return data, nil
}

func parseRecipient(data []byte, now time.Time) (*Recipient, error) {
	if now.IsZero() {
		now = time.Now()
	}
	body, err := dearmorKey(data)
	if err != nil {
		return nil, err
	}
	publics, secrets, err := countKeys(body)
	if err != nil {
		return nil, pgpKeyErr(ErrPGPNotPublicKey, "not an OpenPGP key: %v", err)
	}
	switch {
	case secrets > 0:
		return nil, errPrivateKey
	case publics == 0:
		return nil, pgpKeyErr(ErrPGPNotPublicKey, "no public key in the data")
	case publics > 1:
		return nil, pgpKeyErr(ErrPGPAmbiguousKey, "holds %d keys; put exactly one partner key in the file", publics)
	}
	el, err := openpgp.ReadKeyRing(bytes.NewReader(body))
	if err != nil || len(el) == 0 {
		if err == nil {
			err = errors.New("no key found")
		}
		return nil, pgpKeyErr(ErrPGPNotPublicKey, "cannot use the key (malformed or unsupported algorithm): %v", err)
	}
	if len(el) != 1 { // countKeys saw one, so this should not happen; stay safe
		return nil, pgpKeyErr(ErrPGPAmbiguousKey, "holds %d keys; put exactly one partner key in the file", len(el))
	}
	e := el[0]
	if e.PrivateKey != nil {
		return nil, errPrivateKey
	}
	r := &Recipient{
		Fingerprint: fmt.Sprintf("%X", e.PrimaryKey.Fingerprint),
		entity:      e,
	}
	k, err := r.encryptionKey(now)
	if err != nil {
		return nil, err
	}
	if _, id := e.PrimaryIdentity(now, pgpConfig(now)); id != nil {
		r.UserID = id.Name
	}
	r.EncryptionKeyID = fmt.Sprintf("%016X", k.PublicKey.KeyId)
	r.Algorithm = algorithmName(k.PublicKey)
	r.Expires = earliestExpiry(lifetimeEnd(e.PrimaryKey, k.PrimarySelfSignature), lifetimeEnd(k.PublicKey, k.SelfSignature))
	if ds, err := e.LatestValidDirectSignature(now, pgpConfig(now)); err == nil {
		r.Expires = earliestExpiry(r.Expires, lifetimeEnd(e.PrimaryKey, ds))
	}
	return r, nil
}

var errPrivateKey = pgpKeyErr(ErrPGPNotPublicKey,
	"holds a private (secret) key; configure only the partner's public key (gpg --armor --export FINGERPRINT)")

// dearmorKey returns the binary packets of an armored public key block, or data
// itself when it already is binary.
func dearmorKey(data []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, pgpKeyErr(ErrPGPNotPublicKey, "file is empty; not a public key")
	}
	if trimmed[0]&0x80 != 0 { // every OpenPGP packet header has bit 7 set
		return data, nil
	}
	// armor.Decode reads only the first block: count them ourselves so that
	// `cat a.asc b.asc` is refused rather than silently using a.
	blocks := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "-----BEGIN PGP ") {
			blocks++
		}
	}
	if blocks == 0 {
		return nil, pgpKeyErr(ErrPGPNotPublicKey, "neither an ASCII-armored public key block nor a binary OpenPGP key")
	}
	if blocks > 1 {
		return nil, pgpKeyErr(ErrPGPAmbiguousKey, "holds %d armored blocks; put exactly one partner key in the file", blocks)
	}
	block, err := armor.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, pgpKeyErr(ErrPGPNotPublicKey, "malformed ASCII armor: %v", err)
	}
	switch block.Type {
	case openpgp.PublicKeyType:
	case openpgp.PrivateKeyType:
		return nil, errPrivateKey
	default:
		return nil, pgpKeyErr(ErrPGPNotPublicKey, "holds a %q block, not a %q", block.Type, openpgp.PublicKeyType)
	}
	body, err := io.ReadAll(block.Body)
	if err != nil {
		return nil, pgpKeyErr(ErrPGPNotPublicKey, "malformed ASCII armor: %v", err)
	}
	return body, nil
}

// countKeys walks the packet framing (RFC 9580 section 4.2) and counts primary
// public keys (tag 6) and secret keys (tag 5). It does not need to understand
// the algorithms, so a second key is noticed even when go-crypto would skip it
// as unsupported.
func countKeys(b []byte) (publics, secrets int, err error) {
	for len(b) > 0 {
		h := b[0]
		if h&0x80 == 0 {
			return 0, 0, errors.New("malformed packet header")
		}
		var tag, hdr, n int
		if h&0x40 != 0 { // new format
			tag = int(h & 0x3f)
			if len(b) < 2 {
				return 0, 0, errors.New("truncated packet")
			}
			switch l := int(b[1]); {
			case l < 192:
				hdr, n = 2, l
			case l < 224:
				if len(b) < 3 {
					return 0, 0, errors.New("truncated packet")
				}
				hdr, n = 3, (l-192)<<8+int(b[2])+192
			case l == 255:
				if len(b) < 6 {
					return 0, 0, errors.New("truncated packet")
				}
				hdr, n = 6, int(b[2])<<24|int(b[3])<<16|int(b[4])<<8|int(b[5])
			default: // partial body lengths are for data packets, never keys
				return 0, 0, errors.New("unexpected partial-length packet")
			}
		} else { // old format
			tag = int(h>>2) & 0x0f
			switch h & 3 {
			case 0:
				hdr = 2
			case 1:
				hdr = 3
			case 2:
				hdr = 5
			case 3: // indeterminate: to the end
				hdr, n = 1, len(b)-1
			}
			if len(b) < hdr {
				return 0, 0, errors.New("truncated packet")
			}
			for i := 1; i < hdr && h&3 != 3; i++ {
				n = n<<8 | int(b[i])
			}
		}
		if n < 0 || len(b)-hdr < n {
			return 0, 0, errors.New("truncated packet")
		}
		switch tag {
		case 5:
			secrets++
		case 6:
			publics++
		}
		b = b[hdr+n:]
	}
	return publics, secrets, nil
}

func pgpConfig(now time.Time) *packet.Config {
	return &packet.Config{
		Time: func() time.Time { return now },
		// Used when the key's preferences allow it (GnuPG keys list AES256 first).
		DefaultCipher: packet.CipherAES256,
	}
}

// Check reports whether the key can still encrypt at time now, with the same
// words LoadRecipient would use.
func (r *Recipient) Check(now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.encryptionKey(now); err != nil {
		return fmt.Errorf("pgp key: %w", err)
	}
	return nil
}

// String identifies the key in log lines.
func (r *Recipient) String() string {
	if r.UserID == "" {
		return r.Fingerprint
	}
	return fmt.Sprintf("%s %q", r.Fingerprint, r.UserID)
}

// encryptionKey selects the key go-crypto will encrypt to at now and, when
// there is none, explains why in words an operator can act on. Call with r.mu
// held (or before r is shared).
func (r *Recipient) encryptionKey(now time.Time) (openpgp.Key, error) {
	e, cfg := r.entity, pgpConfig(now)
	if _, err := e.VerifyPrimaryKey(now, cfg); err != nil {
		return openpgp.Key{}, r.primaryError(now, err)
	}
	k, err := e.EncryptionKeyWithError(now, cfg)
	if err == nil {
		return k, nil
	}
	return openpgp.Key{}, r.subkeyError(now, err)
}

func (r *Recipient) primaryError(now time.Time, err error) error {
	e := r.entity
	switch {
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return pgpKeyErr(ErrPGPKeyRevoked, "key %s is revoked; ask the partner for their new key", r.Fingerprint)
	case e.PrimaryKey.CreationTime.After(now):
		// go-crypto calls this expired, or finds no self-signature yet.
		return pgpKeyErr(ErrPGPNoEncryptionKey, "key %s was created %s, later than now (%s); check the clock",
			r.Fingerprint, fmtKeyTime(e.PrimaryKey.CreationTime), fmtKeyTime(now))
	case errors.Is(err, pgperrors.ErrKeyExpired):
		var end time.Time
		if sig, serr := e.PrimarySelfSignature(time.Time{}, pgpConfig(now)); serr == nil {
			end = lifetimeEnd(e.PrimaryKey, sig)
		}
		if end.IsZero() {
			return pgpKeyErr(ErrPGPKeyExpired, "key %s has expired; ask the partner to extend it", r.Fingerprint)
		}
		return pgpKeyErr(ErrPGPKeyExpired, "key %s expired on %s; ask the partner to extend it", r.Fingerprint, fmtKeyTime(end))
	}
	// No valid user ID self-signature: all revoked or expired, or signed
	// with a rejected hash such as MD5.
	return pgpKeyErr(ErrPGPNoEncryptionKey, "key %s has no valid user ID self-signature (revoked, expired or insecure): %v",
		r.Fingerprint, err)
}

func (r *Recipient) subkeyError(now time.Time, err error) error {
	e, cfg := r.entity, pgpConfig(now)
	candidates := 0
	var expired, revoked []string
	if sig, serr := e.PrimarySelfSignature(now, cfg); serr == nil && canEncrypt(e.PrimaryKey, sig) {
		candidates++
	}
	for i := range e.Subkeys {
		sk := &e.Subkeys[i]
		// Zero time: find the binding regardless of expiry, to see what the
		// subkey was meant for.
		sig, serr := sk.LatestValidBindingSignature(time.Time{}, cfg)
		if serr != nil || !canEncrypt(sk.PublicKey, sig) {
			continue
		}
		candidates++
		id := fmt.Sprintf("%016X", sk.PublicKey.KeyId)
		switch _, verr := sk.Verify(now, cfg); {
		case errors.Is(verr, pgperrors.ErrKeyRevoked):
			revoked = append(revoked, id)
		case errors.Is(verr, pgperrors.ErrKeyExpired):
			if end := lifetimeEnd(sk.PublicKey, sig); !end.IsZero() {
				id += " expired on " + fmtKeyTime(end)
			}
			expired = append(expired, id)
		}
	}
	switch {
	case candidates == 0:
		return pgpKeyErr(ErrPGPNoEncryptionKey,
			"key %s has no encryption key, only signing/certification keys; ask the partner for a key with an encryption subkey",
			r.Fingerprint)
	case len(expired) > 0:
		return pgpKeyErr(ErrPGPKeyExpired, "key %s: encryption subkey %s; ask the partner to extend it",
			r.Fingerprint, strings.Join(expired, ", encryption subkey "))
	case len(revoked) > 0:
		return pgpKeyErr(ErrPGPKeyRevoked, "key %s: encryption subkey %s revoked; ask the partner for their new key",
			r.Fingerprint, strings.Join(revoked, ", "))
	}
	if w := weakAlgorithm(err); w != "" {
		return pgpKeyErr(ErrPGPNoEncryptionKey,
			"key %s uses an algorithm too weak to encrypt to (%s); ask the partner for an RSA 3072 or Curve25519 key",
			r.Fingerprint, w)
	}
	return pgpKeyErr(ErrPGPNoEncryptionKey, "key %s has no usable encryption key: %v", r.Fingerprint, err)
}

// weakAlgorithm digs go-crypto's reason out of a key selection error, which
// does not unwrap; "" if the reason is something else.
func weakAlgorithm(err error) string {
	var inner []error
	var sel pgperrors.ErrEncryptionKeySelection
	var psel *pgperrors.ErrEncryptionKeySelection
	switch {
	case errors.As(err, &sel):
		inner = []error{sel.PrimaryKeyErr, sel.EncSelectionErr}
	case errors.As(err, &psel):
		inner = []error{psel.PrimaryKeyErr, psel.EncSelectionErr}
	}
	for _, e := range inner {
		var w pgperrors.WeakAlgorithmError
		if errors.As(e, &w) {
			return string(w)
		}
	}
	return ""
}

func canEncrypt(pk *packet.PublicKey, sig *packet.Signature) bool {
	return sig != nil && pk.PubKeyAlgo.CanEncrypt() && sig.FlagsValid &&
		(sig.FlagEncryptCommunications || sig.FlagEncryptStorage)
}

// lifetimeEnd is when a key stops being valid under the self-signature sig,
// from the key lifetime and the signature's own lifetime; zero = never.
func lifetimeEnd(pk *packet.PublicKey, sig *packet.Signature) time.Time {
	if sig == nil {
		return time.Time{}
	}
	var end time.Time
	if sig.KeyLifetimeSecs != nil && *sig.KeyLifetimeSecs != 0 {
		end = pk.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second)
	}
	if sig.SigLifetimeSecs != nil && *sig.SigLifetimeSecs != 0 {
		end = earliestExpiry(end, sig.CreationTime.Add(time.Duration(*sig.SigLifetimeSecs)*time.Second))
	}
	return end
}

// earliestExpiry of two times where zero means never.
func earliestExpiry(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

func fmtKeyTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func algorithmName(pk *packet.PublicKey) string {
	bits, _ := pk.BitLength()
	switch pk.PubKeyAlgo {
	case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSAEncryptOnly:
		return fmt.Sprintf("RSA %d", bits)
	case packet.PubKeyAlgoElGamal:
		return fmt.Sprintf("ElGamal %d", bits)
	case packet.PubKeyAlgoECDH:
		if c, err := pk.Curve(); err == nil {
			return "ECDH " + string(c)
		}
		return "ECDH"
	case packet.PubKeyAlgoX25519:
		return "X25519"
	case packet.PubKeyAlgoX448:
		return "X448"
	case packet.PubKeyAlgoMlkem768X25519:
		return "ML-KEM-768+X25519"
	case packet.PubKeyAlgoMlkem1024X448:
		return "ML-KEM-1024+X448"
	}
	return fmt.Sprintf("algorithm %d", pk.PubKeyAlgo)
}
