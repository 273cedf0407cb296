package handlers

import (
	"crypto/sha512"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Digistore24's signature fields: sha_sign, or SHASIGN in older IPNs.
const (
	Digistore24SignatureField    = "sha_sign"
	Digistore24SignatureFieldOld = "SHASIGN"
	// Digistore24SignatureLength: SHA-512 in hex.
	Digistore24SignatureLength = 2 * sha512.Size
)

const digistore24KeyPrefix = "ds24-replay/"

// Digistore24Config configures a Digistore24 verifier.
type Digistore24Config struct {
	// Secrets: the IPN connection's SHA passphrases; any one matching is
	// valid (rotation). None may be empty.
	Secrets [][]byte
	// MaxFields refuses a notification with more fields; 0 means
	// DefaultMaxFields.
	MaxFields int
}

// Digistore24 verifies Digistore24 IPN form posts. Their signature is
// what Digistore24's PHP sample digistore_signature computes: for each
// field but sha_sign and SHASIGN, in the order PHP's sort() gives the
// names, its value with HTML entities decoded (html_entity_decode) and, when
// that is not empty, "name=value" followed by the passphrase; SHA-512 of all
// that in upper-case hex. An array field is a field by its full name
// ("a[b]"). It is safe for concurrent use.
type Digistore24 struct {
	cfg Digistore24Config
}

// NewDigistore24 checks cfg and returns a verifier.
func NewDigistore24(cfg Digistore24Config) (*Digistore24, error) {
	if len(cfg.Secrets) == 0 {
		return nil, errors.New("digistore24: at least one secret is required")
	}
	for i, s := range cfg.Secrets {
		if len(s) == 0 {
			return nil, fmt.Errorf("digistore24: secret %d is empty", i)
		}
	}
	if cfg.MaxFields < 0 {
		return nil, errors.New("digistore24: max_fields must not be negative")
	}
	return &Digistore24{cfg: cfg}, nil
}

// Check runs the request-side verification of one IPN: content type, form
// parsing (ParseFormArrays), signature. Refusals are Denials as for ITNS.
func (d *Digistore24) Check(contentType string, body []byte, _ time.Time) (Notification, error) {
	if err := CheckFormContentType(contentType); err != nil {
		return Notification{}, err
	}
	if err := CheckFieldCount(body, d.cfg.MaxFields); err != nil {
		return Notification{}, err
	}
	form, err := ParseFormArrays(body)
	if err != nil {
		return Notification{}, err
	}
	idx, err := d.Verify(form)
	if err != nil {
		return Notification{}, err
	}
	return Notification{SecretIndex: idx, Fields: len(form), replay: form, keyPrefix: digistore24KeyPrefix}, nil
}

func isDigistore24Signature(name string) bool {
	return name == Digistore24SignatureField || name == Digistore24SignatureFieldOld
}

// appendSigned appends the signed string for secret: the form is sorted
// byte-wise, which is PHP's sort() order for the names ParseFormArrays
// lets through.
func (d *Digistore24) appendSigned(dst []byte, form Form, secret []byte) []byte {
	for _, f := range form {
		if isDigistore24Signature(f.Name) {
			continue
		}
		v := PHPHTMLEntityDecode(f.Value)
		if v == "" {
			continue
		}
		dst = append(dst, f.Name...)
		dst = append(dst, '=')
		dst = append(dst, v...)
		dst = append(dst, secret...)
	}
	return dst
}

// Sign returns the signature of form with secret: 128 upper-case hex
// digits. Signature fields in form are ignored.
func (d *Digistore24) Sign(form Form, secret []byte) string {
	bp := payloadPool.Get().(*[]byte)
	buf := d.appendSigned((*bp)[:0], form, secret)
	sum := sha512.Sum512(buf)
	clear(buf)
	*bp = buf[:0]
	payloadPool.Put(bp)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// Verify checks the signature fields of form (sha_sign and SHASIGN; each
// present one must match) against every configured secret and returns the
// index of the one that matched. Case-insensitive and constant-time; every
// secret is tried. Errors are 403 Denials (ReasonSignatureMissing,
// ReasonSignatureMismatch).
func (d *Digistore24) Verify(form Form) (int, error) {
	var got []string
	for _, name := range []string{Digistore24SignatureFieldOld, Digistore24SignatureField} {
		if s, ok := form.Get(name); ok {
			got = append(got, strings.ToUpper(s))
		}
	}
	if len(got) == 0 {
		return -1, Deny(http.StatusForbidden, ReasonSignatureMissing)
	}
	match := -1
	for i, secret := range d.cfg.Secrets {
		want := d.Sign(form, secret)
		ok := 1
		for _, g := range got {
			ok &= subtle.ConstantTimeCompare([]byte(want), []byte(g))
		}
		if ok == 1 && match < 0 {
			match = i
		}
	}
	if match < 0 {
		return -1, Deny(http.StatusForbidden, ReasonSignatureMismatch)
	}
	return match, nil
}

// SignForm signs fields (their order is kept in the body) with the first
// configured secret and returns the URL-encoded body with sha_sign
// appended. A signature field, a duplicate or a name ParseFormArrays
// refuses is an error.
func (d *Digistore24) SignForm(fields []Field) (string, error) {
	for _, f := range fields {
		if isDigistore24Signature(f.Name) {
			return "", fmt.Errorf("digistore24: field %q is the signature field; it is computed", f.Name)
		}
	}
	form, err := ParseFormArrays([]byte(EncodeForm(fields)))
	if err != nil {
		return "", fmt.Errorf("digistore24: %w", err)
	}
	out := append(slices.Clip(fields), Field{Name: Digistore24SignatureField, Value: d.Sign(form, d.cfg.Secrets[0])})
	return EncodeForm(out), nil
}

// ParseFormArrays is ParseForm for senders that post PHP array fields
// ("a[b]=1&a[c]=2"): each is a field by its full name. Two names that
// reach the same $_POST element ("a[b]" twice, "a.b[x]" and "a_b[x]"), or a
// value and an array under one name ("a" and "a[b]"), are a
// ReasonDuplicateField. Names PHP would read otherwise than they are written
// are ReasonMalformed: an empty or unterminated index ("a[]", "a[b"),
// text after an index ("a[b]c"), brackets inside an index ("a[[b]]"), and
// two or more numeric names ("10", "9": PHP's sort() orders those by value,
// not byte-wise, so the signed order would be in doubt).
func ParseFormArrays(body []byte) (Form, error) {
	form, err := parseForm(body, false)
	if err != nil {
		return nil, err
	}
	numeric := 0
	paths := make(map[string]string, len(form))
	for _, f := range form {
		if phpNumeric(f.Name) {
			if numeric++; numeric == 2 {
				return nil, formError(ReasonMalformed, f.Name, errors.New("a second numeric field name"))
			}
		}
		p, ok := phpPath(f.Name)
		if !ok {
			return nil, formError(ReasonMalformed, f.Name, errors.New("not a PHP variable or array element name"))
		}
		if other, dup := paths[p]; dup {
			return nil, formError(ReasonDuplicateField, f.Name, fmt.Errorf("same PHP variable as %q", truncate(other, 64)))
		}
		paths[p] = f.Name
	}
	// A value and an array under one name: "a" and "a[b]", "a[b]" and
	// "a[b][c]". PHP keeps whichever comes last.
	for p, name := range paths {
		for i := len(p) - 1; i > 0; i-- {
			if p[i] != '[' {
				continue
			}
			if other, dup := paths[p[:i]]; dup {
				return nil, formError(ReasonDuplicateField, name, fmt.Errorf("an element of %q", truncate(other, 64)))
			}
		}
	}
	return form, nil
}

// phpPath is the $_POST element a field name reaches: the variable name
// as PHP rewrites it (leading spaces dropped, ' ' and '.' turned into '_',
// cut at a NUL) followed by its "[index]" parts as written.
func phpPath(name string) (string, bool) {
	name = strings.TrimLeft(name, " ")
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	base, rest, isArray := strings.Cut(name, "[")
	if base == "" {
		return "", false
	}
	var b strings.Builder
	if strings.ContainsRune(base, ']') {
		return "", false
	}
	b.WriteString(strings.Map(func(r rune) rune {
		if r == ' ' || r == '.' {
			return '_'
		}
		return r
	}, base))
	if !isArray {
		return b.String(), true
	}
	rest = "[" + rest
	for rest != "" {
		if rest[0] != '[' {
			return "", false // text after an index
		}
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return "", false
		}
		idx := rest[1:end]
		if idx == "" || strings.ContainsAny(idx, "[") {
			return "", false
		}
		b.WriteString(rest[:end+1])
		rest = rest[end+1:]
	}
	return b.String(), true
}

// phpNumeric reports whether PHP 8 compares name as a number: a numeric
// string (whitespace around allowed, a sign, digits with a fraction or an
// exponent), as its sort() does for two such names.
func phpNumeric(s string) bool {
	const space = " \t\n\r\v\f"
	s = strings.TrimLeft(s, space)
	s = strings.TrimRight(s, space)
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	digits := 0
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i, digits = i+1, digits+1
	}
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i, digits = i+1, digits+1
		}
	}
	if digits == 0 {
		return false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		k := j
		for k < len(s) && '0' <= s[k] && s[k] <= '9' {
			k++
		}
		if k > j {
			i = k
		}
	}
	return i == len(s)
}

// PHPHTMLEntityDecode is PHP 8's html_entity_decode($s) with its default
// flags (ENT_QUOTES | ENT_SUBSTITUTE | ENT_HTML401) and charset UTF-8:
// the HTML 4.01 named references (case-sensitive; no &apos;) and decimal
// or hexadecimal numeric ones, each ended by ';', of the code points HTML
// 4.01 allows; anything else is kept as written.
func PHPHTMLEntityDecode(s string) string {
	i := strings.IndexByte(s, '&')
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for i < len(s) {
		c := s[i]
		// PHP looks at an '&' only with at least three bytes after it.
		if c != '&' || i+3 >= len(s) {
			b.WriteByte(c)
			i++
			continue
		}
		r, n := decodeEntity(s[i+1:])
		if n == 0 {
			b.WriteByte('&')
			i++
			continue
		}
		b.WriteRune(r)
		i += 1 + n
	}
	return b.String()
}

// decodeEntity reads the reference after an '&' and returns its code point
// and its length up to and including ';', or n == 0 when PHP keeps it.
func decodeEntity(s string) (r rune, n int) {
	if s[0] == '#' {
		j := 1
		hexa := j < len(s) && (s[j] == 'x' || s[j] == 'X')
		if hexa {
			j++
		}
		isDigit := func(c byte) bool {
			return '0' <= c && c <= '9' || hexa && ('a' <= c && c <= 'f' || 'A' <= c && c <= 'F')
		}
		if j >= len(s) || !isDigit(s[j]) {
			return 0, 0
		}
		// PHP reads the number with strtol, which also takes a "0x"
		// prefix in base 16.
		if hexa && j+2 < len(s) && s[j] == '0' && (s[j+1] == 'x' || s[j+1] == 'X') && isDigit(s[j+2]) {
			j += 2
		}
		var v int64
		for ; j < len(s) && isDigit(s[j]); j++ {
			if v <= 0x10FFFF {
				d := int64(s[j] - '0')
				switch {
				case s[j] >= 'a':
					d = int64(s[j]-'a') + 10
				case s[j] >= 'A':
					d = int64(s[j]-'A') + 10
				}
				if hexa {
					v = v*16 + d
				} else {
					v = v*10 + d
				}
			}
		}
		if j >= len(s) || s[j] != ';' || v > 0x10FFFF || !html401Allowed(rune(v)) {
			return 0, 0
		}
		return rune(v), j + 1
	}
	j := 0
	for j < len(s) && ('a' <= s[j] && s[j] <= 'z' || 'A' <= s[j] && s[j] <= 'Z' || '0' <= s[j] && s[j] <= '9') {
		j++
	}
	if j == 0 || j >= len(s) || s[j] != ';' {
		return 0, 0
	}
	cp, ok := html401Entities[s[:j]]
	if !ok {
		return 0, 0
	}
	return cp, j + 1
}

// html401Allowed is the code points PHP decodes from a numeric reference
// under ENT_HTML401 (measured with php-cli over all of Unicode;
// TestPHPHTMLEntityDecodeCrossCheck).
func html401Allowed(r rune) bool {
	switch {
	case r == 0x09, r == 0x0a, r == 0x0d:
		return true
	case 0x20 <= r && r <= 0x7e, 0xa0 <= r && r <= 0xd7ff, 0xe000 <= r && r <= 0x10ffff:
		return utf8.ValidRune(r)
	}
	return false
}
