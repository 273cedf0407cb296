package report

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// CSRF protects the report page's POST forms with three checks, any of which
// alone stops a cross-site form post:
//
//   - Sec-Fetch-Site (sent by current browsers) must be same-origin, and an
//     Origin header, when present, must name this host;
//   - a random per-browser cookie (SameSite=Strict, HttpOnly) must be sent;
//   - the form's token must be an HMAC of that cookie, the authenticated
//     user and an expiry, under a key only the server knows.
//
// Basic auth credentials are sent by the browser on cross-site requests too,
// which is why the page cannot rely on them alone.
type CSRF struct {
	key []byte
	ttl time.Duration
}

// CSRFCookie and CSRFField name the cookie and the hidden form field.
const (
	CSRFCookie = "postback_report_csrf"
	CSRFField  = "csrf_token"
	csrfTTL    = 12 * time.Hour
)

// NewCSRF uses key (at least 32 bytes, kept secret) to sign tokens. Keep one
// key per process so that a config reload does not invalidate open pages.
func NewCSRF(key []byte) (*CSRF, error) {
	if len(key) < 32 {
		return nil, errors.New("csrf: key must be at least 32 bytes")
	}
	return &CSRF{key: append([]byte(nil), key...), ttl: csrfTTL}, nil
}

// NewCSRFKey returns 32 random bytes for NewCSRF.
func NewCSRFKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read never fails (Go ≥ 1.24)
	return k
}

var errCSRF = errors.New("the form has expired or did not come from this page; reload the page and try again")

// Cookie returns the browser's CSRF cookie value, setting a new one on w when
// the request has none. path scopes the cookie to the page.
func (c *CSRF) Cookie(w http.ResponseWriter, r *http.Request, path string) string {
	if ck, err := r.Cookie(CSRFCookie); err == nil && validCookieValue(ck.Value) {
		return ck.Value
	}
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	v := base64.RawURLEncoding.EncodeToString(b)
	if path == "" {
		path = "/"
	}
	http.SetCookie(w, &http.Cookie{
		Name:     CSRFCookie,
		Value:    v,
		Path:     path,
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
	return v
}

func validCookieValue(v string) bool {
	b, err := base64.RawURLEncoding.DecodeString(v)
	return err == nil && len(b) == 18
}

// Token returns a form token bound to the cookie value and user.
func (c *CSRF) Token(cookie, user string, now time.Time) string {
	exp := now.Add(c.ttl).Unix()
	return strconv.FormatInt(exp, 10) + "." + base64.RawURLEncoding.EncodeToString(c.mac(cookie, user, exp))
}

func (c *CSRF) mac(cookie, user string, exp int64) []byte {
	m := hmac.New(sha256.New, c.key)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(exp))
	m.Write(b[:])
	// Length prefixes keep ("ab","c") and ("a","bc") apart.
	for _, s := range []string{cookie, user} {
		binary.BigEndian.PutUint32(b[:4], uint32(len(s)))
		m.Write(b[:4])
		m.Write([]byte(s))
	}
	return m.Sum(nil)
}

// Check verifies a POST from the page; the form must already be parsed.
func (c *CSRF) Check(r *http.Request, user string, now time.Time) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return errCSRF
	}
	if origin, ok := r.Header["Origin"]; ok {
		u, err := url.Parse(origin[0])
		if err != nil || origin[0] == "null" || !strings.EqualFold(u.Host, r.Host) {
			return errCSRF
		}
	}
	ck, err := r.Cookie(CSRFCookie)
	if err != nil || !validCookieValue(ck.Value) {
		return errCSRF
	}
	tok := r.PostFormValue(CSRFField)
	expStr, sig, ok := strings.Cut(tok, ".")
	if !ok {
		return errCSRF
	}
	exp, err := strconv.ParseInt(expStr, 10, 64)
	if err != nil || now.Unix() > exp || exp > now.Add(c.ttl+time.Minute).Unix() {
		return errCSRF
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, c.mac(ck.Value, user, exp)) {
		return errCSRF
	}
	return nil
}
