package caddymodule

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// A destination with a rate and a sign_secret: a sink that counts never
// sees more than the rate in any second, and every copy carries Standard
// Webhooks headers that verify with the secret from the environment.
func TestRateAndSignedCopies(t *testing.T) {
	const secret = "a merchant's signing secret"
	t.Setenv("POSTBACK_TEST_SIGN_SECRET", secret)
	dest := newTestDestination(t)
	up := newUpstream(t)
	newTester(t, postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		destination 3101 {
			url %s/collect
			ca_cert %s
			concurrency 8
			rate 20/s
			sign_secret {env.POSTBACK_TEST_SIGN_SECRET}
		}`, dest.srv.URL, dest.caFile)), fmt.Sprintf(`
http://127.0.0.1:{port0} {
	route /ipn.php {
		secondary_post 3101
		reverse_proxy %s
	}
}`, up.srv.Listener.Addr()))

	const n, rate = 40, 20
	for i := range n {
		sendNotification(t, "/ipn.php", fmt.Sprintf("sale=%d&amount=9.99", i))
	}
	testutil.WaitFor(t, "every copy delivered", 30*time.Second, func() bool { return len(dest.requests()) == n })

	got := dest.requests()
	// Arrivals, not starts: a copy delayed in transit may arrive with the
	// next ones, hence the slack of a few beyond the rate's one.
	for i := range got {
		in := 0
		for _, r := range got[i:] {
			if r.At.Sub(got[i].At) < time.Second {
				in++
			}
		}
		if in > rate+3 {
			t.Fatalf("%d copies arrived within a second of copy %d, rate %d/s", in, i, rate)
		}
	}
	span := got[n-1].At.Sub(got[0].At)
	t.Logf("%d copies in %s: %.1f/s at rate %d/s", n, span, float64(n-1)/span.Seconds(), rate)

	for i, r := range got {
		id, ts := r.Header.Get("Webhook-Id"), r.Header.Get("Webhook-Timestamp")
		if id == "" || id != r.Header.Get("X-Postback-Id") {
			t.Fatalf("copy %d: webhook-id %q, X-Postback-Id %q", i, id, r.Header.Get("X-Postback-Id"))
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(id + "." + ts + "." + r.Body))
		want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
		if r.Header.Get("Webhook-Signature") != want {
			t.Fatalf("copy %d: webhook-signature %q, want %q", i, r.Header.Get("Webhook-Signature"), want)
		}
		if sec, err := strconv.ParseInt(ts, 10, 64); err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
			t.Fatalf("copy %d: webhook-timestamp %q is not the time of sending", i, ts)
		}
	}
	if st := destStats(adminStats(t), "3101"); st.RateDelayed == 0 {
		t.Errorf("stats: no delivery waited for the rate: %+v", st)
	}
}

// Bad values are refused at load with the Caddyfile line.
func TestRateAndSignSecretRefusedAtLoad(t *testing.T) {
	for _, tc := range []struct{ opt, want string }{
		{"rate 5/h", `rate "5/h": the unit is s or m, at Caddyfile:6`},
		{"rate fast", `rate "fast": want <n>/s or <n>/m with n at least 1, at Caddyfile:6`},
		{"sign_secret short", `sign_secret: 5 bytes, want at least 16, at Caddyfile:6`},
	} {
		cfg := fmt.Sprintf(`{
	postback {
		storage_dir %s
		destination 3101 {
			url https://127.0.0.1:1/collect
			%s
		}
	}
}`, t.TempDir(), tc.opt)
		err := adaptCaddyfile(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.opt, err, tc.want)
		}
	}
}
