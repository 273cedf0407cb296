package delivery

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/storage"
)

// The Standard Webhooks specification's test vector: what its libraries
// verify, we must produce.
func TestSignMatchesStandardWebhooksVector(t *testing.T) {
	key, err := SignKey("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
}

func TestSignKeyRules(t *testing.T) {
	for _, bad := range []string{"short", "whsec_not*base64", "whsec_c2hvcnQ="} {
		if _, err := SignKey(bad); err == nil {
			t.Errorf("SignKey(%q) accepted", bad)
		}
	}
	key, err := SignKey("a plain secret of 24 bytes")
	if err != nil || string(key) != "a plain secret of 24 bytes" {
		t.Fatalf("plain secret: %q, %v", key, err)
	}
	d := &Destination{DIN: "1", URL: &url.URL{Scheme: "https", Host: "example.test"}, SignSecret: "short"}
	if err := d.Validate(); err == nil {
		t.Fatal("Validate accepted a short sign_secret")
	}
}

// Every attempt carries the headers; the id stays, the timestamp and
// signature are the attempt's, and the signature covers the body.
func TestSignedAttempts(t *testing.T) {
	srv := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	store := newFakeStore()
	id := store.add("7", "text/plain", []byte("sale=1&amount=9.99"), time.Now(), 0)
	obs := newRecorder()
	secret := "a plain secret of 24 bytes"
	run(t, store, Options{Observer: obs}, &Destination{DIN: "7", URL: srv.url(t, "/"), Schedule: ms(0, 20), SignSecret: secret})
	testutil.WaitFor(t, "delivered", 10*time.Second, func() bool { return obs.fin(storage.StateDelivered) == 1 })

	key, _ := SignKey(secret)
	reqs := srv.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	for i, r := range reqs {
		if got := r.Header.Get("Webhook-Id"); got != id {
			t.Errorf("attempt %d: webhook-id %q, want the delivery id %q", i+1, got, id)
		}
		ts, err := strconv.ParseInt(r.Header.Get("Webhook-Timestamp"), 10, 64)
		if err != nil {
			t.Fatalf("attempt %d: webhook-timestamp %q", i+1, r.Header.Get("Webhook-Timestamp"))
		}
		if want := Sign(key, id, time.Unix(ts, 0), r.Body); r.Header.Get("Webhook-Signature") != want {
			t.Errorf("attempt %d: signature %q, want %q", i+1, r.Header.Get("Webhook-Signature"), want)
		}
		if Sign(key, id, time.Unix(ts, 0), []byte("sale=2&amount=9.99")) == r.Header.Get("Webhook-Signature") {
			t.Errorf("attempt %d: the signature does not depend on the body", i+1)
		}
	}
}
