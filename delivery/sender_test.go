package delivery

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/storage"
)

func TestPostSendsExactBytesContentTypeAndHeaders(t *testing.T) {
	srv := newSink(t, nil)
	store := newFakeStore()
	payload := []byte("ccustname=J%C3%BCrgen+M&ccustcc=US&ctransamount=12.50&empty=&cverify=ABCD1234")
	id := store.add("1001", "application/x-www-form-urlencoded; charset=UTF-8", payload, time.Now(), 0)
	obs := newRecorder()
	run(t, store, Options{Observer: obs, UserAgent: "test-agent/1"}, &Destination{
		DIN: "1001", URL: srv.url(t, "/collect"), Method: "POST", ItemCode: "ABCD",
		Schedule: ms(0), Header: http.Header{"X-Partner-Key": {"k1"}, "X-Postback-Id": {"spoofed"}},
	})
	testutil.WaitFor(t, "delivered", 5*time.Second, func() bool { return store.get(id).State == storage.StateDelivered })

	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodPost || r.URL.Path != "/collect" || r.URL.RawQuery != "" {
		t.Errorf("request %s %s", r.Method, r.URL)
	}
	if string(r.Body) != string(payload) {
		t.Errorf("body %q, want %q", r.Body, payload)
	}
	want := map[string]string{
		"Content-Type":         "application/x-www-form-urlencoded; charset=UTF-8",
		"X-Postback-Id":        id,
		"X-Postback-Attempt":   "1",
		"X-Postback-Din":       "1001",
		"X-Postback-Item-Code": "ABCD",
		"User-Agent":           "test-agent/1",
		"X-Partner-Key":        "k1",
	}
	for k, v := range want {
		if got := r.Header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	d := store.get(id)
	if len(d.Attempts) != 1 || d.Attempts[0].Status != 204 || d.Attempts[0].Error != "" || d.HasPayload {
		t.Errorf("record %+v", d)
	}
	if obs.get("1001/success") != 1 {
		t.Errorf("observer: %d successes", obs.get("1001/success"))
	}
}

func TestGetAppendsPayloadToQuery(t *testing.T) {
	srv := newSink(t, nil)
	store := newFakeStore()
	payload := "cproditem=7&cemail=a%40b.example"
	withQuery := store.add("1", "application/x-www-form-urlencoded", []byte(payload), time.Now(), 0)
	plain := store.add("2", "application/x-www-form-urlencoded", []byte(payload), time.Now(), 0)
	run(t, store, Options{},
		&Destination{DIN: "1", URL: srv.url(t, "/in?src=edge&x=1"), Method: "get", Schedule: ms(0)},
		&Destination{DIN: "2", URL: srv.url(t, "/in"), Method: "GET", Schedule: ms(0)},
	)
	testutil.WaitFor(t, "both delivered", 5*time.Second, func() bool {
		return store.count(storage.StateDelivered) == 2
	})
	byID := map[string]received{}
	for _, r := range srv.requests() {
		byID[r.Header.Get("X-Postback-Id")] = r
	}
	if r := byID[withQuery]; r.Method != "GET" || r.URL.RawQuery != "src=edge&x=1&"+payload || len(r.Body) != 0 {
		t.Errorf("with query: %s %q body %q", r.Method, r.URL.RawQuery, r.Body)
	}
	if r := byID[plain]; r.URL.RawQuery != payload || r.Header.Get("Content-Type") != "" {
		t.Errorf("plain: %q content type %q", r.URL.RawQuery, r.Header.Get("Content-Type"))
	}
	if got := byID[withQuery].URL.Query().Get("cemail"); got != "a@b.example" {
		t.Errorf("decoded cemail %q", got)
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	other := newSink(t, nil)
	srv := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) {
		http.Redirect(w, r, other.URL+"/elsewhere", http.StatusTemporaryRedirect)
	})
	store := newFakeStore()
	id := store.add("1", "", []byte("a=1"), time.Now(), 0)
	run(t, store, Options{}, &Destination{DIN: "1", URL: srv.url(t, "/"), Schedule: ms(0)})
	testutil.WaitFor(t, "failed", 5*time.Second, func() bool { return store.get(id).State == storage.StateFailed })
	if n := len(other.requests()); n != 0 {
		t.Fatalf("redirect target got %d requests", n)
	}
	if a := store.get(id).Attempts[0]; a.Status != http.StatusTemporaryRedirect {
		t.Errorf("attempt %+v", a)
	}
}

func TestErrorTextHasNoPayloadQueryOrUserinfo(t *testing.T) {
	secrets := []string{"4111111111111111", "4111", "737", "QUERYSECRET", "s3cretpw", "alice", "token=", "cvv=", "ccnum"}
	payload := "ccnum=4111111111111111&cvv=737&name=Zed"
	logs := &testutil.LogBuffer{}

	// Refused connection, GET: the URL holds payload, query and userinfo.
	u, _ := url.Parse("http://alice:s3cretpw@" + testutil.DeadAddr(t) + "/p?token=QUERYSECRET")
	store := newFakeStore()
	refused := store.add("1", "", []byte(payload), time.Now(), 0)

	// Hanging destination, POST: a timeout.
	hang := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) { <-r.Context().Done() })
	hu := hang.url(t, "/h?token=QUERYSECRET")
	hu.User = url.UserPassword("alice", "s3cretpw")
	timedOut := store.add("2", "", []byte(payload), time.Now(), 0)

	run(t, store, Options{Logger: logs.Slog()},
		&Destination{DIN: "1", URL: u, Method: "GET", Schedule: ms(0)},
		&Destination{DIN: "2", URL: hu, Schedule: ms(0), Timeout: 200 * time.Millisecond},
	)
	testutil.WaitFor(t, "both failed", 5*time.Second, func() bool { return store.count(storage.StateFailed) == 2 })

	for _, id := range []string{refused, timedOut} {
		d := store.get(id)
		a := d.Attempts[0]
		if a.Error == "" || a.Status != 0 {
			t.Errorf("%s: attempt %+v: want a transport error", id, a)
		}
		for _, s := range secrets {
			if strings.Contains(a.Error, s) || strings.Contains(d.LastError, s) {
				t.Errorf("%s: error %q / %q leaks %q", id, a.Error, d.LastError, s)
			}
		}
	}
	if e := store.get(refused).Attempts[0].Error; !strings.Contains(e, "refused") {
		t.Errorf("refused: %q", e)
	}
	if e := store.get(timedOut).Attempts[0].Error; !strings.Contains(e, "timeout") {
		t.Errorf("timeout: %q", e)
	}
	for _, s := range secrets {
		if strings.Contains(logs.String(), s) {
			t.Errorf("logs leak %q:\n%s", s, logs.String())
		}
	}
}

func TestRedact(t *testing.T) {
	u, _ := url.Parse("https://bob:pw@h.example/x?k=QS")
	msg := `Get "https://bob:pw@h.example/x?k=QS&cc=4111+1111": cc 4111 1111 raw 4111+1111`
	got := redact(msg, u, []byte("cc=4111+1111"), nil)
	for _, s := range []string{"4111", "bob", "pw@", "k=QS"} {
		if strings.Contains(got, s) {
			t.Errorf("redact(%q) = %q: %q left", msg, got, s)
		}
	}
	ue := &url.Error{Op: "Get", URL: "http://x.example/?k=QS", Err: errors.New("connection reset")}
	if got := describe(ue, time.Second); got != "connection reset" {
		t.Errorf("describe = %q: the URL must go", got)
	}
	if got := describe(&url.Error{Op: "Post", URL: "http://x/", Err: context.DeadlineExceeded}, 3*time.Second); got != "timeout after 3s" {
		t.Errorf("describe timeout = %q", got)
	}
	if long := clip(strings.Repeat("é", 300)); len(long) > maxErrorLen+len("…") || !strings.HasSuffix(long, "…") {
		t.Errorf("clip: %d bytes", len(long))
	}
}

// A CVV is too short for the generic scrubbing; a sensitive field's value is
// scrubbed whatever its length.
func TestRedactSensitiveShortValues(t *testing.T) {
	payload := []byte("cvv=123&note=abc")
	msg := "spool: write failed near 123 and abc"
	if got := redact(msg, nil, payload, nil); !strings.Contains(got, "123") {
		t.Fatalf("without a sensitive list, short values stay (got %q)", got)
	}
	sensitive := func(name string) bool { return name == "cvv" }
	got := redact(msg, nil, payload, sensitive)
	if strings.Contains(got, "123") || !strings.Contains(got, "abc") {
		t.Errorf("redact with cvv sensitive = %q: want 123 gone and abc kept", got)
	}
}
