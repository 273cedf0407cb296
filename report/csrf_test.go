package report

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestReportCSRF(t *testing.T) {
	if _, err := NewCSRF(make([]byte, 16)); err == nil {
		t.Error("a 16-byte key must be refused")
	}
	c, err := NewCSRF(NewCSRFKey())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 11, 21, 14, 0, 0, 0, time.UTC)

	// The first page view sets the cookie.
	rec := httptest.NewRecorder()
	cookieVal := c.Cookie(rec, httptest.NewRequest("GET", "/r/", nil), "/r/")
	set := rec.Result().Cookies()
	if len(set) != 1 || set[0].Value != cookieVal || !set[0].HttpOnly || set[0].SameSite != http.SameSiteStrictMode || set[0].Path != "/r/" {
		t.Fatalf("cookie %+v", set)
	}
	// A later view keeps it.
	req := httptest.NewRequest("GET", "/r/", nil)
	req.AddCookie(set[0])
	rec = httptest.NewRecorder()
	if c.Cookie(rec, req, "/r/") != cookieVal || len(rec.Result().Cookies()) != 0 {
		t.Error("an existing cookie must be kept")
	}
	tok := c.Token(cookieVal, "ops", now)

	post := func(token, cookie string, hdr map[string]string) *http.Request {
		r := httptest.NewRequest("POST", "http://report.example/r/deliveries/ab/retry", strings.NewReader(url.Values{CSRFField: {token}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if cookie != "" {
			r.AddCookie(&http.Cookie{Name: CSRFCookie, Value: cookie})
		}
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		if err := r.ParseForm(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	same := map[string]string{"Origin": "http://report.example", "Sec-Fetch-Site": "same-origin"}
	if err := c.Check(post(tok, cookieVal, same), "ops", now.Add(time.Hour)); err != nil {
		t.Errorf("valid post refused: %v", err)
	}
	if err := c.Check(post(tok, cookieVal, nil), "ops", now); err != nil {
		t.Errorf("valid post without fetch metadata (older browser, curl) refused: %v", err)
	}
	other := c.Token(NewCSRFKeyCookie(t, c), "ops", now)
	otherKey, _ := NewCSRF(NewCSRFKey())
	for name, r := range map[string]struct {
		req  *http.Request
		user string
		at   time.Time
	}{
		"no token":           {post("", cookieVal, same), "ops", now},
		"garbage token":      {post("x.y", cookieVal, same), "ops", now},
		"no cookie":          {post(tok, "", same), "ops", now},
		"other cookie":       {post(other, cookieVal, same), "ops", now},
		"other user":         {post(tok, cookieVal, same), "mallory", now},
		"expired":            {post(tok, cookieVal, same), "ops", now.Add(csrfTTL + time.Second)},
		"cross-site":         {post(tok, cookieVal, map[string]string{"Sec-Fetch-Site": "cross-site"}), "ops", now},
		"same-site":          {post(tok, cookieVal, map[string]string{"Sec-Fetch-Site": "same-site"}), "ops", now},
		"foreign origin":     {post(tok, cookieVal, map[string]string{"Origin": "https://evil.example"}), "ops", now},
		"null origin":        {post(tok, cookieVal, map[string]string{"Origin": "null"}), "ops", now},
		"other server's key": {post(otherKey.Token(cookieVal, "ops", now), cookieVal, same), "ops", now},
		"far future expiry":  {post(c.Token(cookieVal, "ops", now.Add(48*time.Hour)), cookieVal, same), "ops", now},
	} {
		if err := c.Check(r.req, r.user, r.at); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// NewCSRFKeyCookie returns a fresh valid cookie value.
func NewCSRFKeyCookie(t *testing.T, c *CSRF) string {
	t.Helper()
	return c.Cookie(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), "/")
}
