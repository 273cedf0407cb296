package handlers

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Field is one decoded name=value pair of a form body.
type Field struct {
	Name  string
	Value string
}

// Form is a decoded form body: its fields sorted byte-wise by name, each
// name once. Sorted is what the ITNS signature and the dedupe fingerprint
// need, and it makes lookups a binary search.
type Form []Field

// Get returns the value of the field called name.
func (f Form) Get(name string) (string, bool) {
	i, ok := slices.BinarySearchFunc(f, name, func(x Field, n string) int { return strings.Compare(x.Name, n) })
	if !ok {
		return "", false
	}
	return f[i].Value, true
}

// FormError is a refused form body. It carries a *Denial (found by
// errors.As) and, for a duplicate, the offending field name: names are not
// secret, values are, so a value never appears in it.
type FormError struct {
	Denial *Denial
	Field  string // offending field name, if any
	Err    error  // cause, if any
}

func (e *FormError) Error() string {
	msg := "postback: form refused (" + e.Denial.Reason + ")"
	if e.Field != "" {
		msg += fmt.Sprintf(" field %q", truncate(e.Field, 64))
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap exposes both the Denial and the cause to errors.Is/As.
func (e *FormError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Denial}
	}
	return []error{e.Denial, e.Err}
}

func formError(reason, field string, err error) *FormError {
	return &FormError{Denial: Deny(http.StatusBadRequest, reason), Field: field, Err: err}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// CheckFormContentType accepts application/x-www-form-urlencoded with any
// parameters (charset=UTF-8 is common) and refuses everything else,
// including a missing Content-Type: the signature is only defined over a
// form body.
func CheckFormContentType(contentType string) error {
	// Parameters are not needed, so no mime.ParseMediaType (a map per call).
	mt, _, _ := strings.Cut(contentType, ";")
	if !strings.EqualFold(strings.TrimSpace(mt), "application/x-www-form-urlencoded") {
		return formError(ReasonContentType, "", fmt.Errorf("content type %q", truncate(contentType, 100)))
	}
	return nil
}

// DefaultMaxFields is PHP's default max_input_vars: PHP silently drops the
// fields after the first 1000, so a script would act on part of what was
// signed (and mirrored). Refusing more is the only safe answer.
const DefaultMaxFields = 1000

// CountFields counts the fields of a form body or query string the way
// ParseForm and PHP split it (non-empty '&'-separated segments), without
// decoding anything.
func CountFields(body []byte) int {
	n, start := 0, 0
	for i := 0; i <= len(body); i++ {
		if i == len(body) || body[i] == '&' {
			if i > start {
				n++
			}
			start = i + 1
		}
	}
	return n
}

// CheckFieldCount refuses a form with more than max fields (400
// ReasonTooManyFields); max <= 0 means DefaultMaxFields.
func CheckFieldCount(body []byte, max int) error {
	if max <= 0 {
		max = DefaultMaxFields
	}
	if n := CountFields(body); n > max {
		return formError(ReasonTooManyFields, "", fmt.Errorf("%d fields, at most %d", n, max))
	}
	return nil
}

// ParseForm decodes an application/x-www-form-urlencoded body.
//
// It reads the body the way PHP fills $_POST, because a legacy PHP script is
// what sees the same bytes after us, and a parser differential between the
// signature check and the script would let a signed body mean two things:
//
//   - only '&' separates fields; ';' is an ordinary character (Go's
//     url.ParseQuery rejects it instead, which would refuse bodies PHP takes);
//   - empty segments ("a=1&&b=2", a trailing '&') are skipped;
//   - a segment without '=' is a field with an empty value.
//
// It is stricter than PHP where PHP silently guesses: a malformed escape
// ("%zz", a truncated "%4") or an empty name is ReasonMalformed, and a name
// that occurs twice is ReasonDuplicateField, whether the repetition is
// literal or only appears after PHP's name mangling ("a.b" and "a_b", or
// "a" and "a[]", land on the same $_POST key). All refusals are 400s.
func ParseForm(body []byte) (Form, error) {
	return parseForm(body, true)
}

// parseForm is ParseForm; phpKeys false leaves the check of names PHP
// merges to the caller (ParseFormArrays).
func parseForm(body []byte, phpKeys bool) (Form, error) {
	s := string(body)
	form := make(Form, 0, strings.Count(s, "&")+1)
	mangled := false
	for s != "" {
		var seg string
		seg, s, _ = strings.Cut(s, "&")
		if seg == "" {
			continue
		}
		rawName, rawValue, _ := strings.Cut(seg, "=")
		name, err := unescapeForm(rawName)
		if err != nil {
			return nil, formError(ReasonMalformed, "", fmt.Errorf("field name: %w", err))
		}
		if name == "" {
			return nil, formError(ReasonMalformed, "", errors.New("empty field name"))
		}
		value, err := unescapeForm(rawValue)
		if err != nil {
			return nil, formError(ReasonMalformed, name, fmt.Errorf("field value: %w", err))
		}
		if phpKeys && !mangled && phpMangles(name) {
			mangled = true
		}
		form = append(form, Field{Name: name, Value: value})
	}
	slices.SortFunc(form, func(a, b Field) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(form); i++ {
		if form[i].Name == form[i-1].Name {
			return nil, formError(ReasonDuplicateField, form[i].Name, nil)
		}
	}
	if mangled {
		// Rare: only bodies with names PHP rewrites pay for the map.
		seen := make(map[string]string, len(form))
		for _, f := range form {
			k := phpKey(f.Name)
			if other, dup := seen[k]; dup {
				return nil, formError(ReasonDuplicateField, f.Name, fmt.Errorf("same PHP variable as %q", truncate(other, 64)))
			}
			seen[k] = f.Name
		}
	}
	return form, nil
}

// phpMangles reports whether PHP would rewrite name (see phpKey).
func phpMangles(name string) bool {
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case ' ', '.', '[', 0:
			return true
		}
	}
	return false
}

// phpKey approximates the $_POST key PHP derives from a field name: leading
// spaces dropped, the name cut at a NUL, at "[...]" for arrays, ' ' and '.'
// turned into '_' (and an unmatched '[' too). It only serves the duplicate
// check, so an approximation that merges more names is the safe side.
func phpKey(name string) string {
	name = strings.TrimLeft(name, " ")
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	if i := strings.IndexByte(name, '['); i >= 0 {
		if strings.IndexByte(name[i:], ']') > 0 {
			name = name[:i]
		}
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '.', '[':
			return '_'
		}
		return r
	}, name)
}

// unescapeForm decodes '+' and %XX like url.QueryUnescape, without
// allocating when there is nothing to decode.
func unescapeForm(s string) (string, error) {
	n := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", errors.New("malformed percent escape")
			}
			n++
			i += 2
		case '+':
			n++
		}
	}
	if n == 0 {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s) - 2*strings.Count(s, "%"))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%':
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		case '+':
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// EncodeForm encodes fields in the given order, the way PHP's
// http_build_query and Go's url.Values do ('+' for a space).
func EncodeForm(fields []Field) string {
	var b strings.Builder
	for i, f := range fields {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(f.Name))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(f.Value))
	}
	return b.String()
}
