package handlers

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// ClickBank's JSON members that identify a notification.
const (
	cbReceipt         = "receipt"
	cbTransactionType = "transactionType"
	cbTransactionTime = "transactionTime"
	cbVendor          = "vendor"
	cbRole            = "role"
)

// ClickBankJSONConfig configures a ClickBankJSON verifier.
type ClickBankJSONConfig struct {
	// Secrets: ClickBank's secret keys; any one decrypting the notification
	// makes it valid (rotation). None may be empty.
	Secrets [][]byte
	// MaxAge refuses a notification whose transactionTime is older; 0
	// disables the check.
	MaxAge time.Duration
	// FutureSkew: how far ahead transactionTime may be; 0 means
	// DefaultFutureSkew.
	FutureSkew time.Duration
	// RequireTime refuses a notification without a valid transactionTime
	// even without MaxAge: dedupe keys on it.
	RequireTime bool
}

// ClickBankJSON verifies ClickBank INS 6.0, 7.0 and 8.0 notifications: a
// JSON body {"notification": base64, "iv": base64} whose notification is
// the JSON object of the transaction, AES-256-CBC encrypted with the key
// ClickBankKey(secret). The encryption is the only proof of origin (CBC has
// no MAC), so every byte is held to what ClickBank's PHP sample and PHP's
// json_decode would read the same way: valid UTF-8, one JSON object, no
// member named twice. It is safe for concurrent use.
type ClickBankJSON struct {
	cfg    ClickBankJSONConfig
	blocks []cipher.Block // by secret
}

// NewClickBankJSON checks cfg and returns a verifier.
func NewClickBankJSON(cfg ClickBankJSONConfig) (*ClickBankJSON, error) {
	if len(cfg.Secrets) == 0 {
		return nil, errors.New("clickbank_json: at least one secret is required")
	}
	if cfg.MaxAge < 0 || cfg.FutureSkew < 0 {
		return nil, errors.New("clickbank_json: max_age and future_skew must not be negative")
	}
	if cfg.FutureSkew == 0 {
		cfg.FutureSkew = DefaultFutureSkew
	}
	c := &ClickBankJSON{cfg: cfg}
	for i, s := range cfg.Secrets {
		if len(s) == 0 {
			return nil, fmt.Errorf("clickbank_json: secret %d is empty", i)
		}
		b, err := aes.NewCipher(ClickBankKey(s))
		if err != nil {
			return nil, err
		}
		c.blocks = append(c.blocks, b)
	}
	return c, nil
}

// ClickBankKey is the AES-256 key of a ClickBank secret key: the ASCII
// bytes of the first 32 hex digits (lowercase) of its SHA-1, as the PHP
// sample's substr(sha1($secretKey), 0, 32).
func ClickBankKey(secret []byte) []byte {
	sum := sha1.Sum(secret)
	return []byte(hex.EncodeToString(sum[:])[:32])
}

// CheckJSONContentType accepts application/json, text/plain (both with
// any parameters) or no Content-Type at all, as ClickBank has sent them.
func CheckJSONContentType(contentType string) error {
	mt, _, _ := strings.Cut(contentType, ";")
	switch mt = strings.TrimSpace(mt); {
	case mt == "", strings.EqualFold(mt, "application/json"), strings.EqualFold(mt, "text/plain"):
		return nil
	}
	return Deny(http.StatusBadRequest, ReasonContentType)
}

// trimControl is the PHP sample's trim($decrypted, "\0..\32"): it drops
// NUL to SUB (0x1A) at either end, which removes PKCS#7 padding (1 to 16)
// and the zero padding older (mcrypt) samples left alike. So a padding
// that is not PKCS#7 is no error of its own, and no padding oracle exists.
func trimControl(b []byte) []byte {
	for len(b) > 0 && b[0] <= 0x1a {
		b = b[1:]
	}
	for len(b) > 0 && b[len(b)-1] <= 0x1a {
		b = b[:len(b)-1]
	}
	return b
}

// Check verifies one notification. Refusals are Denials: 400 content_type
// and malformed (not the {"notification", "iv"} object), 403
// decrypt_failed, not_a_notification, transtime_missing, stale and future.
func (c *ClickBankJSON) Check(contentType string, body []byte, now time.Time) (Notification, error) {
	if err := CheckJSONContentType(contentType); err != nil {
		return Notification{}, err
	}
	ciphertext, iv, err := parseClickBankEnvelope(body)
	if err != nil {
		return Notification{}, err
	}
	if len(ciphertext) == 0 || len(ciphertext)%aes.BlockSize != 0 {
		return Notification{}, Deny(http.StatusForbidden, ReasonDecryptFailed)
	}
	// Every secret is tried, so the time taken does not tell which matched.
	match, object := -1, false
	var members map[string]json.RawMessage
	plain := make([]byte, len(ciphertext))
	for i, b := range c.blocks {
		cipher.NewCBCDecrypter(b, iv).CryptBlocks(plain, ciphertext)
		m, ok := parseNotificationObject(trimControl(plain))
		if !ok {
			continue
		}
		object = true
		if match < 0 && isNonEmptyString(m[cbReceipt]) && isNonEmptyString(m[cbTransactionType]) {
			match, members = i, m
		}
	}
	clear(plain)
	if match < 0 {
		if object {
			return Notification{}, Deny(http.StatusForbidden, ReasonNotANotification)
		}
		return Notification{}, Deny(http.StatusForbidden, ReasonDecryptFailed)
	}
	if c.cfg.MaxAge > 0 || c.cfg.RequireTime {
		t, ok := cbTime(members[cbTransactionTime])
		if !ok {
			return Notification{}, Deny(http.StatusForbidden, ReasonTimeMissing)
		}
		if c.cfg.MaxAge > 0 {
			if now.Sub(t) > c.cfg.MaxAge {
				return Notification{}, Deny(http.StatusForbidden, ReasonStale)
			}
			if t.Sub(now) > c.cfg.FutureSkew {
				return Notification{}, Deny(http.StatusForbidden, ReasonFuture)
			}
		}
	}
	n := Notification{SecretIndex: match, Fields: len(members), keyPrefix: clickBankKeyPrefix}
	n.Receipt = safeOrEmpty(jsonString(members[cbReceipt]))
	n.TransactionType = safeOrEmpty(jsonString(members[cbTransactionType]))
	n.Role = safeOrEmpty(jsonString(members[cbRole]))
	// Sorted by name, as a Form is; a string is keyed by its value, anything
	// else by its JSON text, so neither can pass for the other.
	for _, name := range []string{cbReceipt, cbRole, cbTransactionTime, cbTransactionType, cbVendor} {
		raw, ok := members[name]
		if !ok {
			continue
		}
		val := "j:" + string(raw)
		if s, isStr := jsonStringOK(raw); isStr {
			val = "s:" + s
		}
		n.replay = append(n.replay, Field{Name: name, Value: val})
	}
	return n, nil
}

// parseClickBankEnvelope reads {"notification": "<base64>", "iv": "<base64>"}:
// a JSON object, each member once, both of them strings of standard base64
// (line breaks allowed), the IV 16 bytes. Other members are ignored (they
// are not encrypted, and the sample ignores them). Anything else is a 400
// ReasonMalformed.
func parseClickBankEnvelope(body []byte) (ciphertext, iv []byte, err error) {
	malformed := func() ([]byte, []byte, error) { return nil, nil, Deny(http.StatusBadRequest, ReasonMalformed) }
	if !utf8.Valid(body) {
		return malformed()
	}
	m, ok := parseJSONObject(body)
	if !ok {
		return malformed()
	}
	note, ok1 := jsonStringOK(m["notification"])
	ivs, ok2 := jsonStringOK(m["iv"])
	if !ok1 || !ok2 {
		return malformed()
	}
	ciphertext, err1 := base64.StdEncoding.DecodeString(note)
	iv, err2 := base64.StdEncoding.DecodeString(ivs)
	if err1 != nil || err2 != nil || len(iv) != aes.BlockSize {
		return malformed()
	}
	return ciphertext, iv, nil
}

// parseNotificationObject is parseJSONObject for a decrypted notification,
// which must also be valid UTF-8 (PHP's json_decode refuses anything else;
// Go's would replace it, and the two must read the same notification).
func parseNotificationObject(b []byte) (map[string]json.RawMessage, bool) {
	if len(b) == 0 || b[0] != '{' || !utf8.Valid(b) {
		return nil, false
	}
	return parseJSONObject(b)
}

// maxJSONDepth is PHP json_decode's default depth: deeper JSON is null to
// the script, so it is refused here too.
const maxJSONDepth = 512

// parseJSONObject parses b as exactly one JSON object and returns its
// members. A member named twice in any object of it is refused: PHP keeps
// the last, and a check on one value must not let the script read another.
func parseJSONObject(b []byte) (map[string]json.RawMessage, bool) {
	if !json.Valid(b) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	members := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		name, _ := tok.(string)
		if _, dup := members[name]; dup {
			return nil, false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil || !uniqueMembers(raw, 2) {
			return nil, false
		}
		members[name] = raw
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return members, true
}

// uniqueMembers walks a valid JSON value at depth and reports whether no
// object in it names a member twice and it nests at most maxJSONDepth.
func uniqueMembers(raw json.RawMessage, depth int) bool {
	if len(raw) == 0 || (raw[0] != '{' && raw[0] != '[') {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	type frame struct {
		names map[string]bool // nil for an array
		key   bool            // an object expecting a member name
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
		if len(stack) > 0 && stack[len(stack)-1].names != nil && stack[len(stack)-1].key {
			if name, ok := tok.(string); ok {
				top := &stack[len(stack)-1]
				if top.names[name] {
					return false
				}
				top.names[name] = true
				top.key = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) > 0 && stack[len(stack)-1].names != nil {
				stack[len(stack)-1].key = true // after this value, a name
			}
			if depth+len(stack) > maxJSONDepth {
				return false
			}
			f := frame{}
			if tok == json.Delim('{') {
				f = frame{names: map[string]bool{}, key: true}
			}
			stack = append(stack, f)
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		default:
			if len(stack) > 0 && stack[len(stack)-1].names != nil {
				stack[len(stack)-1].key = true
			}
		}
	}
}

func jsonStringOK(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func jsonString(raw json.RawMessage) string {
	s, _ := jsonStringOK(raw)
	return s
}

func isNonEmptyString(raw json.RawMessage) bool {
	s, ok := jsonStringOK(raw)
	return ok && s != ""
}

// cbTime reads transactionTime: a string in RFC 3339 with an offset
// ("2016-06-05T13:47:51-06:00").
func cbTime(raw json.RawMessage) (time.Time, bool) {
	s, ok := jsonStringOK(raw)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, s)
	return t, err == nil
}

// Encrypt returns the body ClickBank would post for the notification
// plaintext (a JSON object), encrypted with the first configured secret
// and iv (16 bytes), PKCS#7 padded: {"notification":…,"iv":…}. It refuses
// a plaintext that Check would not accept as a notification.
func (c *ClickBankJSON) Encrypt(plaintext, iv []byte) ([]byte, error) {
	if len(iv) != aes.BlockSize {
		return nil, fmt.Errorf("clickbank_json: iv of %d bytes, want %d", len(iv), aes.BlockSize)
	}
	m, ok := parseNotificationObject(plaintext)
	if !ok {
		return nil, errors.New("clickbank_json: the notification is not one JSON object in UTF-8 with each member once")
	}
	if !isNonEmptyString(m[cbReceipt]) || !isNonEmptyString(m[cbTransactionType]) {
		return nil, errors.New("clickbank_json: the notification needs receipt and transactionType (non-empty strings)")
	}
	pad := aes.BlockSize - len(plaintext)%aes.BlockSize
	buf := make([]byte, len(plaintext)+pad)
	copy(buf, plaintext)
	for i := len(plaintext); i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(c.blocks[0], iv).CryptBlocks(buf, buf)
	return json.Marshal(struct {
		Notification string `json:"notification"`
		IV           string `json:"iv"`
	}{base64.StdEncoding.EncodeToString(buf), base64.StdEncoding.EncodeToString(iv)})
}
