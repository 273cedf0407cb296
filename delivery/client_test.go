package delivery

import (
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/storage"
)

func TestHTTPSWithOwnCA(t *testing.T) {
	var got atomic.Value
	srv := testutil.NewTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Get("X-Postback-Din"))
		w.WriteHeader(http.StatusOK)
	}), testutil.TLSOptions{Quiet: true}) // the refused handshake is expected
	trusted, err := NewClient(srv.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	untrusted, err := NewClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(srv.URL + "/secure")

	store := newFakeStore()
	ok := store.add("tls", "", []byte("a=1"), time.Now(), 0)
	bad := store.add("plain-roots", "", []byte("a=1"), time.Now(), 0)
	run(t, store, Options{},
		&Destination{DIN: "tls", URL: u, Client: trusted, Schedule: ms(0)},
		&Destination{DIN: "plain-roots", URL: u, Client: untrusted, Schedule: ms(0)},
	)
	testutil.WaitFor(t, "both finished", 5*time.Second, func() bool {
		return store.get(ok).State != storage.StatePending && store.get(bad).State != storage.StatePending
	})
	if d := store.get(ok); d.State != storage.StateDelivered || got.Load() != "tls" {
		t.Errorf("own CA: %+v", d)
	}
	d := store.get(bad)
	if d.State != storage.StateFailed || d.Attempts[0].Status != 0 || !strings.Contains(d.Attempts[0].Error, "certificate") {
		t.Errorf("untrusted: %+v", d)
	}
}

func TestNewClientRejectsNonPEM(t *testing.T) {
	if _, err := NewClient([]byte("not a certificate")); err == nil {
		t.Fatal("NewClient accepted garbage as CA")
	}
	c, err := NewClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := c.Transport.(*http.Transport)
	if tr.Proxy != nil || tr.TLSClientConfig.InsecureSkipVerify || c.CheckRedirect == nil {
		t.Error("client must not proxy, skip verification or follow redirects")
	}
}
