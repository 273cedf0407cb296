package handlers

import (
	"crypto/sha1"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Algorithm is how the string that the ITNS / ClickBank signature hashes is
// built from a notification.
type Algorithm uint8

const (
	// AlgorithmSorted is ClickBank 2.x / 4.0 and AffiliCon ITNS: the values
	// of every field but the signature, in byte-wise order of their names.
	AlgorithmSorted Algorithm = iota
	// AlgorithmV1 is ClickBank 1.0: the values of a fixed list of fields, in
	// that order, a missing field counting as empty.
	AlgorithmV1
)

// ParseAlgorithm reads "sorted" (also the empty string) or "v1".
func ParseAlgorithm(s string) (Algorithm, error) {
	switch s {
	case "", "sorted":
		return AlgorithmSorted, nil
	case "v1":
		return AlgorithmV1, nil
	}
	return 0, fmt.Errorf("unknown ITNS algorithm %q (want sorted or v1)", s)
}

func (a Algorithm) String() string {
	if a == AlgorithmV1 {
		return "v1"
	}
	return "sorted"
}

// v1Fields is the ClickBank 1.0 field list without its "c" prefix; the
// configured prefix is put in front of each.
var v1Fields = [...]string{
	"custname", "custemail", "custcc", "custstate", "transreceipt",
	"proditem", "transaction", "transaffiliate", "transpublisher", "prodtype",
	"prodtitle", "transpaymentmethod", "transamount", "affitid", "vendthru",
}

// V1Fields returns the ClickBank 1.0 field list with prefix applied
// ("c" gives ccustname, ccustemail, ...).
func V1Fields(prefix string) []string {
	out := make([]string, len(v1Fields))
	for i, f := range v1Fields {
		out[i] = prefix + f
	}
	return out
}

// SignatureLength is the length of an ITNS signature: the first 8 hex
// digits of a SHA-1, i.e. 32 bits.
const SignatureLength = 8

// ITNSConfig configures an ITNS verifier.
type ITNSConfig struct {
	// Secrets: any one of them signing the notification makes it valid, so a
	// secret can be rotated at the sender without downtime. None may be empty.
	Secrets [][]byte
	// Prefix of every field name ("" for AffiliCon, "c" for ClickBank).
	Prefix string
	// Algorithm: AlgorithmSorted (default) or AlgorithmV1.
	Algorithm Algorithm
	// MaxAge refuses a notification whose <prefix>transtime is older; 0
	// disables the check (and does not require transtime).
	MaxAge time.Duration
	// FutureSkew is how far in the future transtime may be when MaxAge is
	// set; 0 means DefaultFutureSkew.
	FutureSkew time.Duration
	// MaxFields refuses a notification with more fields; 0 means
	// DefaultMaxFields (what PHP keeps).
	MaxFields int
}

// ITNS verifies and signs ITNS / ClickBank notifications. It is safe for
// concurrent use.
type ITNS struct {
	cfg       ITNSConfig
	sigField  string
	timeField string
	v1        []string
}

// NewITNS checks cfg and returns a verifier.
func NewITNS(cfg ITNSConfig) (*ITNS, error) {
	if len(cfg.Secrets) == 0 {
		return nil, errors.New("itns: at least one secret is required")
	}
	for i, s := range cfg.Secrets {
		// An empty secret makes the signature computable by anyone.
		if len(s) == 0 {
			return nil, fmt.Errorf("itns: secret %d is empty", i)
		}
	}
	if err := ValidPrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	if cfg.Algorithm > AlgorithmV1 {
		return nil, fmt.Errorf("itns: unknown algorithm %d", cfg.Algorithm)
	}
	if cfg.MaxAge < 0 || cfg.FutureSkew < 0 {
		return nil, errors.New("itns: max_age and future_skew must not be negative")
	}
	if cfg.FutureSkew == 0 {
		cfg.FutureSkew = DefaultFutureSkew
	}
	v := &ITNS{
		cfg:       cfg,
		sigField:  cfg.Prefix + "verify",
		timeField: cfg.Prefix + "transtime",
	}
	if cfg.Algorithm == AlgorithmV1 {
		v.v1 = V1Fields(cfg.Prefix)
	}
	return v, nil
}

// ValidPrefix accepts what AffiliCon lets a vendor enter: letters and
// digits, and keeps it short.
func ValidPrefix(p string) error {
	if len(p) > 32 {
		return fmt.Errorf("itns: prefix longer than 32 characters")
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return fmt.Errorf("itns: prefix %q: only letters and digits", p)
		}
	}
	return nil
}

// SignatureField is the name of the signature field: <prefix>verify.
func (v *ITNS) SignatureField() string { return v.sigField }

// TimeField is the name of the transaction time field: <prefix>transtime.
func (v *ITNS) TimeField() string { return v.timeField }

// Check runs the whole request-side verification of one notification:
// content type, form parsing with duplicate detection, signature, then
// freshness. It returns the parsed form and the index of the secret that
// matched. Errors carry a *Denial (errors.As): 400 for a body that is not a
// well-formed form, 403 for signature and time failures.
func (v *ITNS) Check(contentType string, body []byte, now time.Time) (Form, int, error) {
	if err := CheckFormContentType(contentType); err != nil {
		return nil, -1, err
	}
	if err := CheckFieldCount(body, v.cfg.MaxFields); err != nil {
		return nil, -1, err
	}
	form, err := ParseForm(body)
	if err != nil {
		return nil, -1, err
	}
	idx, err := v.Verify(form)
	if err != nil {
		return nil, -1, err
	}
	// After the signature, so that an unsigned body learns nothing about the
	// time policy.
	if err := CheckTransTime(form, v.timeField, v.cfg.MaxAge, v.cfg.FutureSkew, now); err != nil {
		return nil, -1, err
	}
	return form, idx, nil
}

// payloadPool recycles the buffers the signed string is built in; a
// notification is a few hundred bytes to a few KiB.
var payloadPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// appendPayload appends the signed string without the secret: each value
// followed by '|'.
func (v *ITNS) appendPayload(dst []byte, form Form) []byte {
	if v.cfg.Algorithm == AlgorithmV1 {
		for _, name := range v.v1 {
			val, _ := form.Get(name)
			dst = append(dst, val...)
			dst = append(dst, '|')
		}
		return dst
	}
	for _, f := range form {
		if f.Name == v.sigField {
			continue
		}
		dst = append(dst, f.Value...)
		dst = append(dst, '|')
	}
	return dst
}

// Sign returns the signature of form with secret: 8 uppercase hex digits.
// A signature field in form is ignored.
func (v *ITNS) Sign(form Form, secret []byte) string {
	bp := payloadPool.Get().(*[]byte)
	buf := append(v.appendPayload((*bp)[:0], form), secret...)
	var sig [SignatureLength]byte
	sigOf(&sig, buf)
	clear(buf)
	*bp = buf[:0]
	payloadPool.Put(bp)
	return string(sig[:])
}

// sigOf writes the uppercase first 8 hex digits of SHA-1(b) into dst.
func sigOf(dst *[SignatureLength]byte, b []byte) {
	const hexUpper = "0123456789ABCDEF"
	sum := sha1.Sum(b)
	for i := 0; i < SignatureLength/2; i++ {
		dst[2*i] = hexUpper[sum[i]>>4]
		dst[2*i+1] = hexUpper[sum[i]&0x0f]
	}
}

// Verify checks the signature field of form against every configured
// secret and returns the index of the one that matched. The comparison is
// case-insensitive and constant-time; every secret is tried, so the time
// taken does not tell which one matched. Errors are 403 Denials
// (ReasonSignatureMissing, ReasonSignatureMismatch).
func (v *ITNS) Verify(form Form) (int, error) {
	got, ok := form.Get(v.sigField)
	if !ok {
		return -1, Deny(http.StatusForbidden, ReasonSignatureMissing)
	}
	// A wrong length cannot match; the length is not secret. The received
	// signature is upper-cased into a fixed buffer (ASCII only: anything
	// else cannot be a hex digit and will not match).
	var recv [SignatureLength]byte
	lengthOK := len(got) == SignatureLength
	if lengthOK {
		for i := 0; i < SignatureLength; i++ {
			c := got[i]
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			recv[i] = c
		}
	}
	bp := payloadPool.Get().(*[]byte)
	payload := v.appendPayload((*bp)[:0], form)
	n := len(payload)
	match := -1
	for i, secret := range v.cfg.Secrets {
		payload = append(payload[:n], secret...)
		var want [SignatureLength]byte
		sigOf(&want, payload)
		if subtle.ConstantTimeCompare(want[:], recv[:]) == 1 && lengthOK && match < 0 {
			match = i
		}
	}
	// Values may be card data and the tail is a secret: do not leave them
	// in a pooled buffer.
	clear(payload)
	*bp = payload[:0]
	payloadPool.Put(bp)
	if match < 0 {
		return -1, Deny(http.StatusForbidden, ReasonSignatureMismatch)
	}
	return match, nil
}

// SignForm signs fields (in the order given, which is kept in the body)
// with the first configured secret and returns the URL-encoded form body
// with the signature field appended. A field named like the signature field
// or a duplicate name is an error.
func (v *ITNS) SignForm(fields []Field) (string, error) {
	form := make(Form, 0, len(fields))
	for _, f := range fields {
		if f.Name == "" {
			return "", errors.New("itns: empty field name")
		}
		if f.Name == v.sigField {
			return "", fmt.Errorf("itns: field %q is the signature field; it is computed", f.Name)
		}
		form = append(form, f)
	}
	slices.SortFunc(form, func(a, b Field) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(form); i++ {
		if form[i].Name == form[i-1].Name {
			return "", fmt.Errorf("itns: duplicate field %q", form[i].Name)
		}
	}
	sig := v.Sign(form, v.cfg.Secrets[0])
	out := make([]Field, 0, len(fields)+1)
	out = append(out, fields...)
	out = append(out, Field{Name: v.sigField, Value: sig})
	body := EncodeForm(out)
	// Names that PHP would merge ("a.b" and "a_b") pass the check above but
	// not the verifier: say so here rather than at the endpoint.
	if _, err := ParseForm([]byte(body)); err != nil {
		return "", fmt.Errorf("itns: the signed body would be refused: %w", err)
	}
	return body, nil
}
