package handlers

import "strings"

// DefaultSensitiveFields are field names whose values are card data or
// secrets (NATS gateway posts carry cc and cvv, EC Suite posts passwords).
// A name matches with any prefix, so "ccustcc"-style prefixed names and
// "member_password" match too.
var DefaultSensitiveFields = []string{"cc", "ccnum", "cardnumber", "card_number", "cvv", "cvv2", "cvc",
	"password", "pass", "passwd", "pwd", "confirm_password", "secret", "verify"}

// Sensitive tells whether a form field's value must never be shown. It is
// immutable once built, so handlers share it freely.
type Sensitive struct{ suffixes []string }

// NewSensitive matches DefaultSensitiveFields plus extra names.
func NewSensitive(extra ...string) *Sensitive {
	s := &Sensitive{}
	for _, n := range append(append([]string(nil), DefaultSensitiveFields...), extra...) {
		if n = strings.ToLower(strings.TrimSpace(n)); n != "" {
			s.suffixes = append(s.suffixes, n)
		}
	}
	return s
}

// Match reports whether name (case-insensitive) ends with a sensitive name.
func (s *Sensitive) Match(name string) bool {
	name = strings.ToLower(name)
	for _, suf := range s.suffixes {
		if strings.HasSuffix(name, suf) {
			return true
		}
	}
	return false
}
