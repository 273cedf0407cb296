package handlers

import (
	"errors"
	"fmt"
	"time"
)

// Verifier checks one notification of a sender's scheme: the ITNS /
// ClickBank form signature, ClickBank's encrypted JSON, Digistore24's
// SHA-512 signature. The request path (capture the body, verify, dedupe,
// set placeholders, go on) is the same for all of them.
type Verifier interface {
	// Check verifies the body as posted with its Content-Type at now. A
	// refusal carries a *Denial (errors.As) whose reason is one of the
	// Reason* constants; no error text holds a field value.
	Check(contentType string, body []byte, now time.Time) (Notification, error)
}

// Notification is what a Verifier learnt of a genuine notification.
type Notification struct {
	// SecretIndex is the configured secret that matched, from 0.
	SecretIndex int
	// Fields is how many fields the notification has (the JSON object's
	// members for ClickBank's JSON), for the debug log.
	Fields int
	// Receipt, TransactionType and Role identify the notification where the
	// scheme names them (ClickBank's JSON), and only when they are
	// SafeIdentifier values; "" otherwise. Nothing else of a notification
	// may be shown.
	Receipt, TransactionType, Role string

	// replay is what ReplayKey hashes, in keyPrefix's namespace.
	replay    Form
	keyPrefix string
}

// ReplayKey is the dedupe store key of the notification: for a form, every
// field (ReplayKey); for ClickBank's JSON, its identity (vendor, receipt,
// transactionType, transactionTime, role), since a resend carries a new IV
// and attemptCount. It is computed on demand: only dedupe needs it.
func (n Notification) ReplayKey() []byte {
	return replayKeyIn(n.keyPrefix, n.replay)
}

// Verifier returns v as a Verifier: its Check, reporting the form.
func (v *ITNS) Verifier() Verifier { return itnsVerifier{v} }

type itnsVerifier struct{ v *ITNS }

func (x itnsVerifier) Check(contentType string, body []byte, now time.Time) (Notification, error) {
	form, idx, err := x.v.Check(contentType, body, now)
	if err != nil {
		return Notification{}, err
	}
	return Notification{SecretIndex: idx, Fields: len(form), replay: form, keyPrefix: replayKeyPrefix}, nil
}

// MaxIdentifierLen bounds a SafeIdentifier.
const MaxIdentifierLen = 64

// SafeIdentifier reports whether s may be shown in a log line, an access
// log or an error page: 1 to 64 ASCII letters, digits and "_-.*" (ClickBank
// receipts such as "ABCD1234", "ABCD1234-B01" or a test's "********",
// types such as "CANCEL-REBILL", roles such as "JV_PARTNER"). Anything else
// could be a customer's data or a forged log line.
func SafeIdentifier(s string) bool {
	if s == "" || len(s) > MaxIdentifierLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.' || c == '*') {
			return false
		}
	}
	return true
}

func safeOrEmpty(s string) string {
	if SafeIdentifier(s) {
		return s
	}
	return ""
}

// Formats of a notification body, for VerifierConfig.Format.
const (
	FormatForm          = "form"           // application/x-www-form-urlencoded (the default)
	FormatClickBankJSON = "clickbank_json" // ClickBank INS 6.0+: encrypted JSON
)

// AlgorithmNameDigistore24 is VerifierConfig.Algorithm for Digistore24's
// IPN signature (the form format only).
const AlgorithmNameDigistore24 = "digistore24"

// VerifierConfig chooses and configures a Verifier. The zero Format and
// Algorithm are the ITNS / ClickBank form signature, sorted.
type VerifierConfig struct {
	// Format: "" or FormatForm, or FormatClickBankJSON.
	Format string
	// Algorithm (the form format only): "" or "sorted", "v1", or
	// AlgorithmNameDigistore24.
	Algorithm string
	// Secrets: any one of them valid (rotation); none may be empty.
	Secrets [][]byte
	// Prefix of the field names (ITNS / ClickBank forms only).
	Prefix string
	// MaxAge and FutureSkew bound the notification's time; 0 disables the
	// check, 0 skew means DefaultFutureSkew.
	MaxAge, FutureSkew time.Duration
	// MaxFields bounds a form's fields; 0 means DefaultMaxFields.
	MaxFields int
	// Dedupe: replays are detected, so the notification's identity must be
	// complete (ClickBank's JSON then requires transactionTime).
	Dedupe bool
}

// CheckOptions refuses an unknown format or algorithm, future_skew without
// max_age, and what CheckConflicts refuses. It does not look at the
// secrets.
func (c VerifierConfig) CheckOptions() error {
	if err := c.CheckConflicts(); err != nil {
		return err
	}
	if c.FutureSkew > 0 && c.MaxAge == 0 {
		return errors.New("future_skew without max_age")
	}
	return nil
}

// CheckConflicts refuses unknown names, bad values and the combinations
// that make no sense: clickbank_json with a prefix, an algorithm or
// max_fields; digistore24 with a prefix or with max_age (Digistore24's IPN
// documents no time of the notification itself to check). What it refuses
// stays refused whatever is added, so a config adapter can call it after
// each option and name that option's line.
func (c VerifierConfig) CheckConflicts() error {
	if c.MaxAge < 0 || c.FutureSkew < 0 {
		return errors.New("max_age and future_skew must not be negative")
	}
	if c.MaxFields < 0 {
		return fmt.Errorf("max_fields %d: must not be negative", c.MaxFields)
	}
	switch c.Format {
	case "", FormatForm:
	case FormatClickBankJSON:
		switch {
		case c.Algorithm != "":
			return fmt.Errorf("format %s is decrypted, not signed: it takes no algorithm (%q)", c.Format, c.Algorithm)
		case c.Prefix != "":
			return fmt.Errorf("format %s has no field prefix (%q): its fields are JSON members", c.Format, c.Prefix)
		case c.MaxFields != 0:
			return fmt.Errorf("format %s is not a form: max_fields does not apply", c.Format)
		}
		return nil
	default:
		return fmt.Errorf("unknown format %q (want form or %s)", c.Format, FormatClickBankJSON)
	}
	if c.Algorithm == AlgorithmNameDigistore24 {
		switch {
		case c.Prefix != "":
			return fmt.Errorf("algorithm %s has no field prefix (%q)", c.Algorithm, c.Prefix)
		case c.MaxAge != 0:
			return fmt.Errorf("algorithm %s: max_age cannot be checked, Digistore24's IPN documents no time of the notification itself (order_date_time is the order's, older for a refund or a rebill); use dedupe and the sender allowlist", c.Algorithm)
		}
		return nil
	}
	if _, err := ParseAlgorithm(c.Algorithm); err != nil {
		return fmt.Errorf("unknown ITNS algorithm %q (want sorted, v1 or %s)", c.Algorithm, AlgorithmNameDigistore24)
	}
	return ValidPrefix(c.Prefix)
}

// NewVerifier checks c and returns the Verifier it describes.
func NewVerifier(c VerifierConfig) (Verifier, error) {
	if err := c.CheckOptions(); err != nil {
		return nil, err
	}
	switch {
	case c.Format == FormatClickBankJSON:
		return NewClickBankJSON(ClickBankJSONConfig{
			Secrets: c.Secrets, MaxAge: c.MaxAge, FutureSkew: c.FutureSkew, RequireTime: c.Dedupe,
		})
	case c.Algorithm == AlgorithmNameDigistore24:
		return NewDigistore24(Digistore24Config{Secrets: c.Secrets, MaxFields: c.MaxFields})
	}
	alg, err := ParseAlgorithm(c.Algorithm)
	if err != nil {
		return nil, err
	}
	v, err := NewITNS(ITNSConfig{
		Secrets: c.Secrets, Prefix: c.Prefix, Algorithm: alg,
		MaxAge: c.MaxAge, FutureSkew: c.FutureSkew, MaxFields: c.MaxFields,
	})
	if err != nil {
		return nil, err
	}
	return v.Verifier(), nil
}
