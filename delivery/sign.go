package delivery

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks (standardwebhooks.com) headers of a signed copy: the
// partner checks with any of its libraries that the copy came from this edge
// and is recent.
const (
	HeaderWebhookID        = "Webhook-Id"
	HeaderWebhookTimestamp = "Webhook-Timestamp"
	HeaderWebhookSignature = "Webhook-Signature"
)

// minSignKey is the shortest signing key accepted, in bytes: the spec's
// libraries generate 24 and more; a shorter one is guessable.
const minSignKey = 16

// SignKey returns the HMAC key of a sign_secret: the spec's form
// "whsec_<base64>" (what its libraries generate and verify with) is
// decoded; any other string is used as it is.
func SignKey(secret string) ([]byte, error) {
	key := []byte(secret)
	if b64, ok := strings.CutPrefix(secret, "whsec_"); ok {
		var err error
		if key, err = base64.StdEncoding.DecodeString(b64); err != nil {
			return nil, fmt.Errorf("sign_secret: whsec_ must be followed by base64")
		}
	}
	if len(key) < minSignKey {
		return nil, fmt.Errorf("sign_secret: %d bytes, want at least %d", len(key), minSignKey)
	}
	return key, nil
}

// Sign is the Standard Webhooks signature of one message: "v1," and the
// base64 HMAC-SHA256 of "<id>.<unix seconds>.<payload>".
func Sign(key []byte, id string, at time.Time, payload []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + strconv.FormatInt(at.Unix(), 10) + "."))
	m.Write(payload)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// setSignature adds the signed-copy headers to an attempt. The id is the
// delivery's, the same on every attempt (the partner's duplicate check); the
// timestamp is the attempt's. What is signed is what carries the payload:
// the body of a POST, the appended query of a GET.
func setSignature(h http.Header, key []byte, id string, at time.Time, payload []byte) {
	h.Set(HeaderWebhookID, id)
	h.Set(HeaderWebhookTimestamp, strconv.FormatInt(at.Unix(), 10))
	h.Set(HeaderWebhookSignature, Sign(key, id, at, payload))
}
